//! Listing and health endpoints: `/listChunks`, `/listCategories`, `/healthz`.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Request;

use super::error::ApiError;
use super::params::Query;
use super::{json, ok, AppState, HttpResponse};

pub(super) fn list_chunks(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let category = Query::parse(req.uri().query()).category()?;
    let storage = state.storage()?;
    let list = storage
        .category(&category)
        .map(|log| log.list())
        .unwrap_or_default();
    json(&list)
}

pub(super) fn list_categories(state: &AppState) -> Result<HttpResponse, ApiError> {
    json(&state.storage()?.category_names())
}

pub(super) fn healthz(state: &AppState) -> HttpResponse {
    match state.storage() {
        Ok(_) => ok(Bytes::from_static(b"ok\n"), "text/plain; charset=utf-8"),
        Err(e) => e.into_response(),
    }
}
