//! What the package ships besides the daemon: `--version`.

use crate::harness::*;

#[test]
fn version_names_the_release_the_commit_and_the_build_date() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_secret-rotator"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let rest = line
        .trim()
        .strip_prefix(concat!(
            "secret-rotator ",
            env!("CARGO_PKG_VERSION"),
            " (commit "
        ))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{line}"
    );
    let d: Vec<&str> = date.split('-').collect();
    assert!(
        d.len() == 3 && d.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())),
        "{line}"
    );
}

/// The dist build's link (deploy/link/cc-ordered, the linker of .cargo/config.toml) lays the
/// listed functions out first, in the list's order, and finds one whose hash changed by its
/// name without it; any other link is `cc`'s own. Linked here for real, with the `cc` and the
/// LLVM linker that rustc links with, on a small C program whose functions stand for the
/// daemon's.
#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
#[test]
fn the_dist_link_lays_out_the_hot_functions_first() {
    use std::process::Command;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The dist build's linker is this one.
    let config: toml::Table = toml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.cargo/config.toml"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        config["target"]["x86_64-unknown-linux-gnu"]["linker"].as_str(),
        Some("deploy/link/cc-ordered")
    );
    // Defined cold first, as the compiler would leave them; two named as Rust's legacy mangling
    // names a function, with a hash, one of them with the suffix LLVM gives a local symbol.
    let source = "int cold_a(int x) { return x * 3 + 1; }\n\
                  int cold_b(int x) { return x * 5 + 2; }\n\
                  int _ZN3hot3one17h0123456789abcdefE(int x) { return x * 7 + 3; }\n\
                  int hot_three(int x) __asm__(\"_ZN3hot5three17h0123456789abcdefE.llvm.42\");\n\
                  int hot_three(int x) { return x * 17 + 6; }\n\
                  int cold_c(int x) { return x * 11 + 4; }\n\
                  int hot_two(int x) { return x * 13 + 5; }\n\
                  int main(int argc, char **argv) {\n\
                  (void)argv; return cold_a(argc) + cold_b(argc) + cold_c(argc)\n\
                  + _ZN3hot3one17h0123456789abcdefE(argc) + hot_two(argc) + hot_three(argc); }\n";
    std::fs::write(dir.join("p.c"), source).unwrap();
    let out = Command::new("cc")
        .args(["-c", "-O0", "-ffunction-sections", "-o"])
        .arg(dir.join("p.o"))
        .arg(dir.join("p.c"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The hashes and the suffix the list has are another build's.
    let list = dir.join("hot.txt");
    std::fs::write(
        &list,
        "hot_two\n_ZN3hot3one17hffffffffffffffffE\n\
         _ZN3hot5three17hffffffffffffffffE.llvm.7\nnot_in_this_build\n",
    )
    .unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .unwrap();
    let gcc_ld = std::path::Path::new(stdout(&sysroot).trim())
        .join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld");
    let link = |to: &std::path::Path| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let out = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/link/cc-ordered"
        ))
        .env("SECRET_ROTATOR_HOT_SYMBOLS", &list)
        .arg(dir.join("p.o"))
        .arg("-B")
        .arg(&gcc_ld)
        .args(["-fuse-ld=lld", "-o"])
        .arg(to)
        .output()
        .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        // The functions, by address.
        let nm = Command::new("nm").arg(to).output().unwrap();
        let mut text: Vec<(u64, String)> = stdout(&nm)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3
                    && f[1] == "T"
                    && ["cold_", "hot_", "_ZN3hot", "main"]
                        .iter()
                        .any(|p| f[2].starts_with(p)))
                .then(|| (u64::from_str_radix(f[0], 16).unwrap(), f[2].to_string()))
            })
            .collect();
        text.sort();
        text.into_iter().map(|(_, name)| name).collect::<Vec<_>>()
    };

    let dist = dir.join("target/dist/deps/secret_rotator-0123");
    let order = link(&dist);
    assert_eq!(
        order[..3],
        [
            "hot_two",
            "_ZN3hot3one17h0123456789abcdefE",
            "_ZN3hot5three17h0123456789abcdefE.llvm.42"
        ],
        "the listed functions first, in the list's order: {order:?}"
    );
    let stats = std::fs::read_to_string(
        dir.join("target/dist/deps/secret_rotator-0123.symbol-order.stats"),
    )
    .unwrap();
    assert_eq!(
        stats.trim(),
        "4 listed: 1 found by name, 2 by name without hash (2 symbols), 1 not found"
    );
    // Another profile's link is the compiler's own: the source's order.
    let release = link(&dir.join("target/release/deps/secret_rotator-0123"));
    let at = |name: &str| release.iter().position(|n| n == name).unwrap();
    assert!(
        at("cold_a") < at("hot_two") && at("cold_b") < at("_ZN3hot3one17h0123456789abcdefE"),
        "{release:?}"
    );
    assert!(
        !dir.join("target/release/deps/secret_rotator-0123.symbol-order")
            .exists()
    );
}
