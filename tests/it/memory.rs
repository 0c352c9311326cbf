//! What stays in the daemon's memory: no completed rotation's secret is left in the process
//! once the rotation is over, and the process cannot be dumped or read by other processes.

use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::harness::*;

/// A mapping of a process, as `/proc/PID/maps` lists it.
struct Region {
    start: u64,
    end: u64,
    perms: String,
    path: String,
}

fn regions(pid: u32) -> Vec<Region> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    maps.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (range, perms) = (parts.next()?, parts.next()?);
            let path = parts.nth(3).unwrap_or("").to_string();
            let (start, end) = range.split_once('-')?;
            Some(Region {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                perms: perms.to_string(),
                path,
            })
        })
        // Only writable mappings can hold what the daemon received or built (code and read-only
        // data cannot), and the kernel's [vvar]/[vsyscall] pages are not the daemon's.
        .filter(|r| r.perms.starts_with("rw") && !r.path.starts_with("[v"))
        .collect()
}

/// A piece of a secret value to look for.
struct Needle {
    bytes: Vec<u8>,
    /// Which value it is taken from.
    value: usize,
    /// The whole value in one of its forms, or a 16-byte piece of it.
    whole: bool,
}

/// The forms a value travels in (as it is, in JSON, form-encoded), whole, and 16-byte pieces of
/// them every 8 bytes: any fragment of 23 bytes or more holds one of those.
fn needles(values: &[String]) -> Vec<Needle> {
    let mut out: Vec<Needle> = Vec::new();
    for (n, value) in values.iter().enumerate() {
        let json = serde_json::to_string(value).unwrap();
        let mut forms = vec![
            value.clone(),
            json.trim_matches('"').to_string(),
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        ];
        forms.dedup();
        for form in forms {
            let b = form.into_bytes();
            let mut starts: Vec<usize> = (0..b.len().saturating_sub(16)).step_by(8).collect();
            starts.push(b.len().saturating_sub(16));
            for at in starts {
                out.push(Needle {
                    bytes: b[at..(at + 16).min(b.len())].to_vec(),
                    value: n,
                    whole: false,
                });
            }
            out.push(Needle {
                bytes: b,
                value: n,
                whole: true,
            });
        }
    }
    out
}

/// Every place a needle occurs in the writable memory of `pid`, as the needle and a description
/// (the mapping, and the printable bytes just before the hit, which tell what the buffer was);
/// and how many bytes were read.
fn scan(pid: u32, needles: &[Needle]) -> (Vec<(usize, String)>, usize) {
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem");
    let finders: Vec<_> = needles
        .iter()
        .map(|n| memchr::memmem::Finder::new(&n.bytes))
        .collect();
    let mut hits = Vec::new();
    let mut read = 0;
    let mut buf = Vec::new();
    for r in regions(pid) {
        buf.resize((r.end - r.start) as usize, 0);
        // Some mappings (guard pages, device memory) cannot be read: nothing can be there.
        if mem.read_exact_at(&mut buf, r.start).is_err() {
            continue;
        }
        read += buf.len();
        for (i, f) in finders.iter().enumerate() {
            for at in f.find_iter(&buf) {
                let before: String = buf[at.saturating_sub(120)..at]
                    .iter()
                    .map(|&b| {
                        if b.is_ascii_graphic() || b == b' ' {
                            b as char
                        } else {
                            '.'
                        }
                    })
                    .collect();
                hits.push((i, format!("{} {} after {before:?}", r.perms, r.path)));
            }
        }
    }
    (hits, read)
}

/// After several rotations, the idle daemon's memory holds none of the secrets it created,
/// verified and published, in any form they travelled in (JSON answers, form bodies).
#[tokio::test(flavor = "multi_thread")]
async fn no_completed_rotation_leaves_its_secret_in_the_daemons_memory() {
    let env = Env::new(Setup {
        clients: vec![("app-one", "AzureADMyOrg"), ("app-two", "AzureADMyOrg")],
        ..Setup::default()
    })
    .await;
    // Every reconcile reads the published version, value included (docs/decisions.md, "Secrets
    // in memory"): the schedule is made rare, so that nothing but the first reconcile at start
    // and the forced rotations runs, and the daemon is idle when it is scanned.
    let text = std::fs::read_to_string(&env.config_path).unwrap().replace(
        r#"schedule = "*/2 * * * * *""#,
        r#"schedule = "0 0 0 1 1 *""#,
    );
    assert!(text.contains(r#"schedule = "0 0 0 1 1 *""#), "{text}");
    std::fs::write(&env.config_path, text).unwrap();
    // Reading another process's memory needs it to be dumpable: this opt-out exists for this
    // test only (the test after this one shows the default).
    let daemon = env.spawn_daemon(&[("SECRET_ROTATOR_TEST_DUMPABLE", "1")]);
    let published =
        |n: usize| env.versions("app-one").len() >= n && env.versions("app-two").len() >= n;
    assert!(
        eventually(Duration::from_secs(30), || published(1)).await,
        "both clients rotated: {}",
        daemon.stderr()
    );
    // Nothing in flight: a reconcile goes on after its version is published (the status row,
    // the history), and a forced rotation of a client in flight is refused (409).
    let idle = || async {
        for _ in 0..100 {
            let (_, body) = daemon.get("/v1/clients").await.unwrap();
            if !body.contains("\"in_flight\":true") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    };
    // Two more rotations of each, forced through the admin API.
    let http = reqwest::Client::new();
    for round in 2..=3 {
        assert!(idle().await, "round {} finished", round - 1);
        for name in ["app-one", "app-two"] {
            let r = http
                .post(format!("http://{}/v1/clients/{name}/rotate", daemon.addr))
                .bearer_auth(&env.admin_token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202, "{name}");
        }
        assert!(
            eventually(Duration::from_secs(30), || published(round)).await,
            "round {round} published: {}",
            daemon.stderr()
        );
    }
    // Idle: nothing in flight, and a moment for the reconciles to return their results.
    assert!(idle().await, "the rotations finished");

    // Every value the tenant minted, except the daemon's own credential, which it must keep.
    let mut values: Vec<String> = minted(&env)
        .into_iter()
        .filter(|v| v != DAEMON_SECRET)
        .collect();
    values.sort();
    values.dedup();
    assert!(values.len() >= 6, "{values:?}");
    let needles = needles(&values);
    // The connections that carried the last secrets close a second or two after they went
    // idle (docs/decisions.md, "Secrets in memory"); give them some seconds more on a busy
    // machine.
    let start = std::time::Instant::now();
    let (hits, read) = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (hits, read) = scan(daemon.child.id(), &needles);
        if hits.is_empty() || start.elapsed() > Duration::from_secs(15) {
            break (hits, read);
        }
    };
    assert!(
        read > 1 << 20,
        "the scan read the daemon's memory ({read} bytes)"
    );
    let copies: Vec<&String> = hits
        .iter()
        .filter(|(i, _)| needles[*i].whole)
        .map(|(_, at)| at)
        .collect();
    let mut found: Vec<usize> = hits.iter().map(|(i, _)| needles[*i].value).collect();
    found.sort();
    found.dedup();
    assert!(
        hits.is_empty(),
        "{} of {} secrets found in {read} bytes of the daemon's memory: {} whole copies, {} \
         16-byte pieces; the copies:\n{}",
        found.len(),
        values.len(),
        copies.len(),
        hits.len(),
        copies
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The uid that owns `/proc/PID/mem`: the process's own user while it is dumpable, root once
/// it is not (the kernel hands the files of a non-dumpable process to root).
fn mem_owner(pid: u32) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/mem"))
        .expect("stat /proc/PID/mem")
        .uid()
}

/// Starts `run` as `uid`, waits until it has signed in (its secrets are loaded), and returns
/// it.
async fn run_as(env: &Env, uid: u32, extra_env: &[(&str, &str)]) -> Daemon {
    use std::os::unix::process::CommandExt;
    let signed_in = env.journal().len();
    let log = env
        .dir
        .path()
        .join(format!("daemon-as-{uid}-{}.log", extra_env.len()));
    let mut cmd = env.command(&["run", "--config", &path_str(&env.config_path)]);
    cmd.envs(extra_env.iter().copied())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
    if uid != 0 && uid != own_uid() {
        cmd.uid(uid).gid(uid);
    }
    let daemon = Daemon {
        child: cmd.spawn().expect("spawn daemon"),
        addr: String::new(),
        log,
    };
    assert!(
        eventually(Duration::from_secs(20), || env.journal()[signed_in..]
            .iter()
            .any(|e| e.operation == Operation::Token))
        .await,
        "the daemon signed in: {}",
        daemon.stderr()
    );
    daemon
}

fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// Without the test's opt-out, the daemon is not dumpable: no core dump, and no process of
/// its user can read its memory. Shown by the owner of `/proc/PID/mem`, which is why the daemon
/// must run as a user other than root: as the tests' user, or as nobody when they run as root.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_cannot_be_dumped_nor_its_memory_read_by_its_own_user() {
    let env = Env::new(Setup::default()).await;
    let mut uid = own_uid();
    if uid == 0 {
        uid = 65534;
        let mut dirs = vec![env.dir.path().to_path_buf()];
        while let Some(d) = dirs.pop() {
            std::os::unix::fs::chown(&d, Some(uid), Some(uid)).unwrap();
            for entry in std::fs::read_dir(&d).unwrap().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
                }
            }
        }
    }

    // The opt-out shows that the check tells the two apart.
    let mut dumpable = run_as(&env, uid, &[("SECRET_ROTATOR_TEST_DUMPABLE", "1")]).await;
    assert_eq!(
        mem_owner(dumpable.child.id()),
        uid,
        "dumpable with the opt-out"
    );
    let _ = dumpable.child.kill();
    dumpable.wait_exit(Duration::from_secs(10));

    let daemon = run_as(&env, uid, &[]).await;
    let pid = daemon.child.id();
    assert_eq!(mem_owner(pid), 0, "not dumpable: {}", daemon.stderr());
    if own_uid() != 0 {
        let denied = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap_err();
        assert_eq!(
            denied.kind(),
            std::io::ErrorKind::PermissionDenied,
            "{denied}"
        );
    }
    assert!(!daemon.stderr().contains("dumpable"), "{}", daemon.stderr());
}
