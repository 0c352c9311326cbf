//! What the world-event run (`tests/it/world.rs`) found, each as a small deterministic test
//! named after the behaviour it requires. The run's seed that found it is in the comment.

use std::time::Duration;

use crate::harness::*;

/// Found with seed 1: the run sent SIGHUP (a config reload) right after starting the daemon;
/// the daemon ended at once, without a line, and every client went unreconciled.
#[tokio::test(flavor = "multi_thread")]
async fn a_sighup_while_starting_does_not_end_the_daemon() {
    let env = Env::new(Setup::default()).await;
    let mut daemon = env.spawn_daemon(&[]);
    // As a config-management tool or a reload storm would: at once, not after readiness.
    daemon.signal("HUP");
    let ended = daemon.wait_exit(Duration::from_secs(3));
    assert!(
        ended.is_none(),
        "the daemon ended on a SIGHUP during start-up ({ended:?}); stderr: {}",
        daemon.stderr()
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(&daemon.addr).is_ok()
        })
        .await,
        "it serves after the reload"
    );
}
