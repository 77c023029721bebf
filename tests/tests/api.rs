//! Starter API behaviour at the edge: authentication, idempotency, and bad input that starts
//! nothing.

mod common;

use common::{API_TOKEN, Stack, request, unique};
use serde_json::{Value, json};

/// Number of workflow executions with this certificate id, as Temporal sees them.
fn executions(stack: &Stack, id: &str) -> usize {
    let out = stack.temporal(&[
        "workflow",
        "count",
        "--query",
        &format!("WorkflowId = '{}'", common::workflow_id(id)),
    ]);
    out.split_whitespace()
        .filter_map(|w| w.parse::<usize>().ok())
        .next()
        .unwrap_or_else(|| panic!("count output: {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_request_twice_starts_one_workflow() {
    let stack = Stack::start("idempotent").await;
    let id = unique("twice");
    let req = request(&id, "payments");
    let (first, body) = stack.post("/v1/certificates", &req).await;
    assert_eq!(first, 201, "{body}");
    let (second, body) = stack.post("/v1/certificates", &req).await;
    assert_eq!(second, 200, "{body}");
    assert_eq!(body["created"], false);

    let mut changed = req.clone();
    changed["common_name"] = json!("other.example.com");
    let (status, body) = stack.post("/v1/certificates", &changed).await;
    assert_eq!(status, 409, "{body}");

    stack
        .wait_for(&id, std::time::Duration::from_secs(60), |s| {
            s["phase"] == "active"
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await; // visibility is eventually consistent
    assert_eq!(executions(&stack, &id), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_4xx_naming_the_field_and_starts_nothing() {
    let stack = Stack::start("bad-input").await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/certificates", stack.api_url);
    let mut rejected_ids = Vec::new();

    let mut cases: Vec<(String, Value, u16, &str)> = Vec::new();
    let mut add = |mutate: &dyn Fn(&mut Value), status: u16, field: &'static str| {
        let id = unique("bad");
        let mut req = request(&id, "payments");
        mutate(&mut req);
        cases.push((id, req, status, field));
    };
    add(
        &|r| r["dns_names"] = json!(["ok.example.com", "not a name"]),
        422,
        "dns_names[1]",
    );
    add(
        &|r| r["ip_addresses"] = json!(["999.1.1.1"]),
        422,
        "ip_addresses[0]",
    );
    add(
        &|r| r["validity_seconds"] = json!(1),
        422,
        "validity_seconds",
    );
    add(&|r| r["issuer"] = json!("nobody"), 422, "issuer");
    add(&|r| r["key_type"] = json!("dsa-1024"), 422, "key_type");
    add(
        &|r| r["renewal"] = json!({"renew_at_fraction": 1.5}),
        422,
        "renewal.renew_at_fraction",
    );
    add(
        &|r| {
            r.as_object_mut()
                .unwrap()
                .remove("common_name")
                .map(|_| ())
                .unwrap()
        },
        422,
        "common_name",
    );
    add(&|r| r["colour"] = json!("blue"), 422, "colour");
    for (id, req, status, field) in cases {
        let (got, body) = stack.post("/v1/certificates", &req).await;
        assert_eq!(got, status, "{field}: {body}");
        assert!(
            body.to_string().contains(field),
            "error does not name {field}: {body}"
        );
        rejected_ids.push(id);
    }

    // Malformed JSON, and a body over the limit.
    let resp = client
        .post(&url)
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body("{\"certificate_id\":")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let id = unique("huge");
    let mut huge = request(&id, "payments");
    huge["dns_names"] = json!(vec!["a.example.com"; 10_000]);
    let resp = client
        .post(&url)
        .bearer_auth(API_TOKEN)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    rejected_ids.push(id);

    // No or wrong credentials.
    let id = unique("noauth");
    let resp = client
        .post(&url)
        .json(&request(&id, "payments"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client
        .post(&url)
        .bearer_auth("wrong-token-0123456789")
        .json(&request(&id, "payments"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    rejected_ids.push(id);

    let (status, body) = stack.get("/v1/certificates/has%20space").await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = stack
        .get(&format!("/v1/certificates/{}", unique("absent")))
        .await;
    assert_eq!(status, 404);

    tokio::time::sleep(std::time::Duration::from_secs(2)).await; // visibility is eventually consistent
    for id in rejected_ids {
        assert_eq!(executions(&stack, &id), 0, "{id} started a workflow");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_describes_the_routes() {
    let stack = Stack::start("openapi").await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", stack.api_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/certificates",
        "/v1/certificates/{id}",
        "/v1/certificates/{id}/revoke",
        "/v1/certificates/{id}/renew",
        "/healthz",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(
        doc["components"]["schemas"]
            .get("CertificateRequest")
            .is_some()
    );
}
