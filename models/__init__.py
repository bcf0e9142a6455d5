"""Every neural model Sift loads or trains: the device resolver, model references, the embedder, the
cross-encoder and the causal LM. Imports no other Sift package, so every room can use it."""
