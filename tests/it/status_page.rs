//! The status page at `GET /` against the emulator: what it shows, that hostile text from Azure
//! reaches it as text, that no secret does, and its security headers.

use std::time::Duration;

use emulator::world::{FaultKind, FaultRule};

use crate::harness::*;

/// An error code a hostile (or broken) service could send; the daemon reports Azure's codes.
const HOSTILE_CODE: &str = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&";

#[tokio::test]
async fn the_status_page_shows_every_client_escapes_azure_text_and_holds_no_secret() {
    let env = Env::new(Setup {
        clients: vec![("app-one", "AzureADMyOrg"), ("app-two", "AzureADMyOrg")],
        ..Setup::default()
    })
    .await;
    // app-two's application cannot be read: its error, with Azure's code, is on the page.
    env.em.world().add_fault(FaultRule {
        operation: Operation::GraphGetApplication,
        target: Some(env.client("app-two").object_id.clone()),
        count: 10_000,
        kind: FaultKind::Status {
            status: 403,
            code: Some(HOSTILE_CODE.into()),
            retry_after: None,
        },
    });
    let daemon = env.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(30), || !env
            .versions("app-one")
            .is_empty())
        .await,
        "{}",
        daemon.stderr()
    );
    let key = env.published_key("app-one");
    let http = reqwest::Client::new();
    let mut page = None;
    for _ in 0..100 {
        let r = http
            .get(format!("http://{}/", daemon.addr))
            .send()
            .await
            .unwrap();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap();
        if body.contains(&key) && body.contains("alert(1)") {
            page = Some((headers, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (headers, body) = page.unwrap_or_else(|| panic!("{}", daemon.stderr()));
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let csp = header("content-security-policy");
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-frame-options"), "DENY");

    // Both clients, the published key id with its bar, and app-two's failure.
    assert!(body.contains("<th scope=\"row\">app-one</th>"), "{body}");
    assert!(
        body.contains("<tr class=\"failed\"><th scope=\"row\">app-two</th>"),
        "{body}"
    );
    assert!(body.contains(&format!("<code>{key}</code>")), "{body}");
    assert!(body.contains("<meter "), "{body}");
    // Azure's text is shown as text, never as markup.
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&quot;&#39;&amp;"),
        "{body}"
    );
    assert!(
        !body.contains("<script") && !body.contains("<img"),
        "{body}"
    );
    for secret in minted(&env) {
        assert!(!body.contains(&secret), "the page shows a secret value");
    }

    // A rebinding page's name is refused here as on every endpoint.
    let r = http
        .get(format!("http://{}/", daemon.addr))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 421);
}
