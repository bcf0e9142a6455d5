"""What Sift learns offline and how it is judged.

Evaluation shared by `sift eval`, bench and promotion (BEIR loading, metrics, reports, the bm25s reference,
suggestion and QAC evaluation); click logs turned into sessions, click models (CTR, PBM, DBN) and simulated
users; the training of the learnt ranker (LightGBM), the bi-encoder and cross-encoder (sentence-transformers)
and the causal LM (Ray Train); promotion gates and interleaving analysis. The reindex quality gate lives in
`indexing/gate.py`, since indexing/ may not import this package.
"""
