//! Secrets stay secret: tokens, node secrets and resume tokens never reach the logs, and policy
//! versions can be pinned by sha256.

mod common;

use common::*;
use serde_json::json;
use switchboard::policy::sha256_hex;

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let redis = redis();
    let node_token = "node-token-SECRET-1f2e";
    let admin_token = "admin-token-SECRET-9a8b";
    let top = format!("node_token = \"{node_token}\"\nadmin_token = \"{admin_token}\"");
    let mut gw = ChildGateway::launch(&redis, "gw-logs", &top, "", true).await;

    // A node with the token, one with a wrong token, and a reconnect presenting the node secret.
    let mut node = gw.node().await;
    let mut register = node_register(Some("node-logs"), &["zh"], &["en"], 2);
    register["token"] = json!(node_token);
    node.send(register.clone()).await;
    let secret = node.expect("node_register_ack").await["node_secret"].as_str().unwrap().to_owned();
    let mut intruder = gw.node().await;
    let mut wrong = register.clone();
    wrong["token"] = json!("wrong-token-SECRET-77");
    intruder.send(wrong).await;
    assert_eq!(intruder.expect("error").await["code"], "UNAUTHORIZED");
    let mut again = gw.node().await;
    register["node_secret"] = json!(secret);
    again.send(register).await;
    again.expect("node_register_ack").await;

    // A session, a resume with its token and one with a wrong token.
    let mut client = gw.client().await;
    client.send(json!({"type":"session_init","src_lang":"zh","tgt_lang":"en","mode":"one_way"})).await;
    let ack = client.expect("session_init_ack").await;
    let (session, resume_token) =
        (ack["session_id"].as_str().unwrap(), ack["resume_token"].as_str().unwrap());
    let mut back = gw.client().await;
    back.send(json!({"type":"session_init","resume_session_id":session,"resume_token":resume_token})).await;
    back.expect("session_init_ack").await;
    let mut guess = gw.client().await;
    guess
        .send(json!({"type":"session_init","resume_session_id":session,"resume_token":"guess-SECRET-55"}))
        .await;
    assert_eq!(guess.expect("error").await["code"], "INVALID_SESSION");

    // The admin API with its token and with a wrong one.
    let policy = component("least-loaded");
    let url = format!("{}/admin/policies/node-selection", gw.admin_url);
    let (status, _) =
        switchboard::admin_client::request("PUT", &url, Some(admin_token), &policy).await.unwrap();
    assert_eq!(status, 200);
    let (status, _) =
        switchboard::admin_client::request("PUT", &url, Some("admin-guess-SECRET-3"), &policy).await.unwrap();
    assert_eq!(status, 401);

    gw.kill();
    let log = gw.log();
    assert!(
        log.contains("Node registered") && log.contains("session resumed"),
        "the log is being written:\n{log}"
    );
    for secret in [
        node_token,
        admin_token,
        &secret,
        resume_token,
        "wrong-token-SECRET-77",
        "guess-SECRET-55",
        "admin-guess-SECRET-3",
    ] {
        assert!(!log.contains(secret), "the log contains a secret ({secret})");
    }
}

#[tokio::test]
async fn pinned_policy_versions_are_the_only_ones_that_load() {
    let redis = redis();
    let allowed = component("least-loaded");
    let gw = TestGateway::start(&redis, |c| {
        c.admin_token = Some("t".into());
        c.policy.pinned_sha256 = vec![sha256_hex(&allowed).to_ascii_uppercase()];
    })
    .await;
    let (status, body) =
        admin(&gw, "PUT", "/admin/policies/node-selection", Some("t"), &component("weighted-random")).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("pinned_sha256"), "{body}");
    let (status, body) = admin(&gw, "PUT", "/admin/policies/node-selection", Some("t"), &allowed).await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}
