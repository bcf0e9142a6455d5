"""The API's routes, one `APIRouter` per resource; `serving.api.create_api` includes them."""
