//! The parsers of Graph's and Key Vault's answers against arbitrary bytes and JSON-shaped input:
//! never a panic, and every error text bounded and on one line, whatever the service sends.

use proptest::prelude::*;

use super::graph::{graph_error, parse_application, parse_applications_page};
use super::keyvault::error_body;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn graph_and_key_vault_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_application(&body);
        let _ = parse_applications_page(&body);
        let _ = graph_error(&body);
        let _ = error_body(&body);
    }

    #[test]
    fn graph_and_key_vault_parsers_never_panic_on_json_shaped_input(
        code in "\\PC{0,600}", message in "\\PC{0,900}", depth in 0usize..200
    ) {
        let mut inner = serde_json::json!({"code": code, "message": message});
        for _ in 0..depth {
            inner = serde_json::json!({"code": "x", "innererror": inner});
        }
        let body = serde_json::to_vec(&serde_json::json!({"error": inner})).unwrap();
        // Bounded, one-line texts, whatever the service sends (or unreadable, past JSON's
        // nesting limit).
        for (c, m) in [graph_error(&body), error_body(&body)] {
            prop_assert!(m.len() <= 400 && !m.contains('\n'));
            prop_assert!(c.is_none_or(|c| c.len() <= 100));
        }
        let app = serde_json::json!({"id": code, "appId": message, "passwordCredentials": [{"keyId": code, "endDateTime": message}]});
        let _ = parse_application(&serde_json::to_vec(&app).unwrap());
        let page = serde_json::json!({"value": [{"appId": code, "displayName": message, "keyCredentials": [{"keyId": message, "endDateTime": code}]}], "@odata.nextLink": message});
        let _ = parse_applications_page(&serde_json::to_vec(&page).unwrap());
    }
}
