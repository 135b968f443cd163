//! Informers over the Cluster API: the agent's view of the cluster comes from list + watch calls
//! to any server peer (linearizable lists; watches served from that peer's applied state).

use flotilla_api::cluster::{ListRequest, WatchRequest};
use flotilla_state::informer::{BoxFuture, EventStream, ObjectSource, Page, Query};
use flotilla_state::registry::object::MetaText;
use flotilla_state::registry::{ApiError, EventType, ObjectEvent};
use serde_json::Value;
use tonic::Streaming;

use super::client::ApiClient;

/// Items per list page requested by informers.
const LIST_PAGE_ITEMS: i64 = 2_000;

pub struct ApiSource {
    pub client: ApiClient,
}

fn api_error(status: tonic::Status) -> ApiError {
    match status.code() {
        tonic::Code::OutOfRange => ApiError::Expired(status.message().to_string()),
        tonic::Code::InvalidArgument => ApiError::Invalid(status.message().to_string()),
        tonic::Code::NotFound => ApiError::NotFound {
            kind: String::new(),
            name: status.message().to_string(),
        },
        _ => ApiError::Unavailable(status.message().to_string()),
    }
}

struct ApiWatch {
    stream: Streaming<flotilla_api::cluster::WatchEvent>,
}

impl EventStream for ApiWatch {
    fn next(&mut self) -> BoxFuture<'_, Result<ObjectEvent, ApiError>> {
        Box::pin(async move {
            let event = self
                .stream
                .message()
                .await
                .map_err(api_error)?
                .ok_or_else(|| ApiError::Unavailable("watch stream ended".into()))?;
            let kind = match event.r#type.as_str() {
                "ADDED" => EventType::Added,
                "MODIFIED" => EventType::Modified,
                "DELETED" => EventType::Deleted,
                "BOOKMARK" => EventType::Bookmark,
                _ => return Err(ApiError::Expired(event.error)),
            };
            // Only the resourceVersion is read here; the informer decodes the object itself.
            let revision = MetaText::read(&event.object)
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .resource_version
                .parse()
                .unwrap_or(0);
            Ok(ObjectEvent {
                kind,
                object: event.object,
                revision,
            })
        })
    }
}

fn list_request(query: &Query, continue_token: Option<String>) -> ListRequest {
    ListRequest {
        kind: query.kind.name().into(),
        namespace: query.namespace.clone().unwrap_or_default(),
        all_namespaces: query.namespace.is_none(),
        label_selector: query.label_selector.clone(),
        field_selector: query.field_selector.clone(),
        limit: LIST_PAGE_ITEMS,
        r#continue: continue_token.unwrap_or_default(),
        stale: false,
    }
}

impl ObjectSource for ApiSource {
    fn list(
        &self,
        query: &Query,
        continue_token: Option<String>,
    ) -> BoxFuture<'_, Result<Page, ApiError>> {
        let request = list_request(query, continue_token);
        Box::pin(async move {
            let page = self
                .client
                .call(|mut c| {
                    let r = request.clone();
                    async move { c.list(r).await }
                })
                .await
                .map_err(api_error)?;
            let items = page
                .items
                .iter()
                .map(|i| serde_json::from_slice(i).map_err(|e| ApiError::Internal(e.to_string())))
                .collect::<Result<Vec<Value>, _>>()?;
            Ok(Page {
                items,
                resource_version: page.resource_version.parse().unwrap_or(0),
                continue_token: (!page.r#continue.is_empty()).then_some(page.r#continue),
            })
        })
    }

    fn watch(
        &self,
        query: &Query,
        after: i64,
    ) -> BoxFuture<'_, Result<Box<dyn EventStream>, ApiError>> {
        let request = WatchRequest {
            kind: query.kind.name().into(),
            namespace: query.namespace.clone().unwrap_or_default(),
            all_namespaces: query.namespace.is_none(),
            label_selector: query.label_selector.clone(),
            field_selector: query.field_selector.clone(),
            resource_version: after.to_string(),
            bookmarks: true,
        };
        Box::pin(async move {
            // Watches are long-lived: no call deadline, but a failover across servers to open it.
            let mut last = None;
            for index in 0..self.client.len() {
                match self.client.cluster(index).watch(request.clone()).await {
                    Ok(response) => {
                        return Ok(Box::new(ApiWatch {
                            stream: response.into_inner(),
                        }) as Box<dyn EventStream>)
                    }
                    Err(status) => last = Some(api_error(status)),
                }
            }
            Err(last.expect("at least one server"))
        })
    }
}
