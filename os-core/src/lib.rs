//! `os-core`: the library behind the OneStream promotion tools.
//!
//! Each `os-*` binary parses its flags ([`cli`], the only module that
//! names clap) and calls one step in [`steps`]. The steps stand on four
//! rooms, which never import a step:
//!
//! - [`record`]: the artifact record, how input lines become records, and
//!   the error codes records carry;
//! - [`pipeline`]: the stream driver that runs a step over every record and
//!   keeps the record rules, plus what the CI host is told;
//! - [`oci`]: where images live (registries and OCI layouts), by digest:
//!   the `os-oci` crate, which knows nothing of records or flags;
//! - [`signing`] and [`kube`]: keys and signature formats; Kubernetes
//!   manifests and kubectl;
//! - [`azure`]: Entra ID credentials and the Azure services the steps call
//!   (Key Vault for signing, Resource Manager for ACR's server-side import).
//!
//! [`http`] (in `os-oci` too) is the floor everything that talks HTTP
//! stands on: one retry policy, one loopback rule. `ARCHITECTURE.md` draws
//! the whole house.

pub mod azure;
pub mod cli;
pub mod kube;
pub mod pipeline;
pub mod record;
pub mod signing;
pub mod steps;

/// Where images live: the `os-oci` crate, which stands alone.
pub use os_oci as oci;
/// The HTTP floor (retry policy, loopback rule), from `os-oci`.
pub use os_oci::http;

/// The rooms' one-way dependencies (ARCHITECTURE.md), held to the code:
/// each room may name only the rooms listed for it, and only `cli.rs`
/// names clap.
#[cfg(test)]
mod architecture {
    use std::path::Path;

    const ROOMS: [(&str, &[&str]); 7] = [
        ("record", &["oci"]),
        ("azure", &["oci", "http"]),
        ("signing", &["azure", "oci", "http"]),
        ("kube", &[]),
        ("pipeline", &["record", "oci"]),
        (
            "steps",
            &["pipeline", "record", "signing", "azure", "kube", "oci", "http"],
        ),
        (
            "cli.rs",
            &["steps", "pipeline", "signing", "azure", "oci", "http"],
        ),
    ];
    const ALL: [&str; 9] = [
        "record", "azure", "signing", "kube", "pipeline", "steps", "cli", "oci", "http",
    ];

    fn sources(path: &Path, out: &mut Vec<(String, String)>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                sources(&entry.unwrap().path(), out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((path.display().to_string(), std::fs::read_to_string(path).unwrap()));
        }
    }

    #[test]
    fn each_room_imports_only_the_rooms_below_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut wrong = Vec::new();
        for (room, allowed) in ROOMS {
            let mut files = Vec::new();
            sources(&src.join(room), &mut files);
            assert!(!files.is_empty(), "no sources for {room}");
            let own = room.trim_end_matches(".rs");
            for (file, text) in files {
                for other in ALL
                    .iter()
                    .filter(|other| **other != own && !allowed.contains(other))
                {
                    if text.contains(&format!("crate::{other}::"))
                        || text.contains(&format!("crate::{other};"))
                    {
                        wrong.push(format!("{file} names crate::{other}"));
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "imports against ARCHITECTURE.md:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn only_cli_names_clap() {
        let mut files = Vec::new();
        sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        let naming: Vec<&str> = files
            .iter()
            .filter(|(file, text)| {
                !file.ends_with("/cli.rs") && !file.ends_with("/lib.rs") && text.contains("clap")
            })
            .map(|(file, _)| file.as_str())
            .collect();
        assert!(naming.is_empty(), "clap outside cli.rs: {naming:?}");
    }
}
