//! `GET /openapi.json`, generated from the handlers and wire types.

use axum::Json;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The OpenAPI 3 description of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Berth lease API", description = "Multi-cluster lease coordination (v1alpha1)"),
    paths(
        super::lease::acquire,
        super::lease::renew,
        super::lease::release,
        super::lease::get_lease,
        super::lease::list_namespace,
        super::lease::list_all,
        super::heartbeat::heartbeat,
        super::history::history,
        super::health::healthz,
        super::health::readyz,
    ),
    components(schemas(
        berth_api::AcquireRequest,
        berth_api::RenewRequest,
        berth_api::ReleaseRequest,
        berth_api::LeaseResponse,
        berth_api::LeaseStatus,
        berth_api::LeaseState,
        berth_api::LeaseList,
        berth_api::ErrorBody,
        berth_api::HeartbeatRequest,
        berth_api::HeartbeatLease,
        berth_api::HeartbeatResponse,
        berth_api::HeartbeatResult,
        berth_api::WatchEvent,
        berth_api::WatchEventType,
        berth_api::LeaseHistory,
        berth_api::HistoryItem,
    )),
    modifiers(&BearerAuth, &EmptyQueryValues),
    tags((name = "leases", description = "Lease operations"), (name = "health", description = "Liveness and readiness"))
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// An empty query value (`?limit=`) means the parameter's default, as an absent one does (the
/// handlers read `Some("")` as `None`): the document admits it for every typed query parameter.
struct EmptyQueryValues;

impl Modify for EmptyQueryValues {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, SchemaType, Type};
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                for p in op.parameters.iter_mut().flatten() {
                    let typed = match &p.schema {
                        Some(RefOr::T(Schema::Object(o))) => {
                            !matches!(o.schema_type, SchemaType::Type(Type::String))
                        }
                        _ => false,
                    };
                    if !typed || !matches!(p.parameter_in, ParameterIn::Query) {
                        continue;
                    }
                    let Some(typed) = p.schema.take() else {
                        continue;
                    };
                    let empty = ObjectBuilder::new()
                        .schema_type(Type::String)
                        .max_length(Some(0))
                        .description(Some("empty: the default"));
                    p.schema = Some(AnyOfBuilder::new().item(typed).item(empty).into());
                }
            }
        }
    }
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_query_parameters_admit_an_empty_value() {
        // Found by schemathesis: `?limit=` and `?renewals=` mean the default, which the
        // document did not admit.
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let params = doc["paths"]["/v1alpha1/leases"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .clone();
        let param = |name: &str| params.iter().find(|p| p["name"] == name).unwrap().clone();
        let any = param("limit")["schema"]["anyOf"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(any[0]["maximum"], 1000);
        assert_eq!(any[1]["maxLength"], 0);
        assert!(param("renewals")["schema"]["anyOf"].is_array());
        assert!(param("continue")["schema"].get("anyOf").is_none());
    }
}
