//! Kubernetes manifests as text: find the container images of every
//! workload in multi-document YAML, and rewrite just those scalars in the
//! original text.
//!
//! The YAML is parsed (saphyr-parser, which gives the span of every scalar)
//! only to locate the `image:` values; the output is the input with those
//! spans replaced, never a re-serialisation. So comments, key order,
//! quoting and blank lines survive, and the same input always gives the
//! same bytes.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// The fields of a pod spec that hold containers.
pub const CONTAINER_FIELDS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// Names of a kustomization file, in kustomize's order of preference.
pub const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}:{line}:{column}: YAML does not parse: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: not UTF-8 text")]
    NotUtf8 { file: String },
    #[error("{file}: no YAML files (*.yaml, *.yml) in this directory")]
    EmptyDirectory { file: String },
    #[error(
        "{file}:{line}: {object} container {container:?}: the image is {what}; write it as a plain or quoted scalar"
    )]
    UnsupportedImage {
        file: String,
        line: usize,
        /// `Deployment/iam`, as shown.
        object: String,
        container: String,
        what: &'static str,
    },
}

/// `Deployment/iam` (with its namespace when the manifest names one).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)?;
        if let Some(namespace) = &self.namespace {
            write!(f, " (namespace {namespace})")?;
        }
        Ok(())
    }
}

/// One container's `image:` in a manifest, and where its scalar is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerImage {
    pub object: ObjectName,
    /// `containers`, `initContainers` or `ephemeralContainers`.
    pub field: &'static str,
    pub container: String,
    pub image: String,
    /// 1-based line of the image scalar.
    pub line: usize,
    /// Byte range of the scalar in the text, quotes included.
    span: Range<usize>,
    quote: Option<char>,
}

/// A parsed manifest: its text and the container images found in it.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// How messages name it: the path as given, or `DIR (kubectl kustomize)`.
    pub name: String,
    pub text: String,
    pub images: Vec<ContainerImage>,
    /// Every object (`kind` + `metadata.name`) in document order.
    pub objects: Vec<ObjectName>,
}

impl Manifest {
    /// Parses `text`; `name` is what messages call it.
    pub fn parse(name: impl Into<String>, text: String) -> Result<Manifest, ManifestError> {
        let name = name.into();
        let documents = parse_documents(&name, &text)?;
        let mut images = Vec::new();
        let mut objects = Vec::new();
        for document in &documents {
            collect_objects(&name, document, &mut objects, &mut images)?;
        }
        Ok(Manifest {
            name,
            text,
            images,
            objects,
        })
    }

    /// The text with the images at `replacements` (indexes into
    /// [`Manifest::images`], and the new image) rewritten in place.
    pub fn rewritten(&self, replacements: &[(usize, String)]) -> String {
        let mut edits: Vec<(&ContainerImage, &str)> = replacements
            .iter()
            .map(|(index, image)| (&self.images[*index], image.as_str()))
            .collect();
        edits.sort_by_key(|(found, _)| found.span.start);
        let mut out = String::with_capacity(self.text.len() + edits.len() * 80);
        let mut at = 0;
        for (found, image) in edits {
            out.push_str(&self.text[at..found.span.start]);
            match found.quote {
                Some(quote) => {
                    out.push(quote);
                    out.push_str(image);
                    out.push(quote);
                }
                None => out.push_str(image),
            }
            at = found.span.end;
        }
        out.push_str(&self.text[at..]);
        out
    }
}

/// Where manifests come from: a YAML file, or a kustomize directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Kustomize(PathBuf),
}

/// Expands the paths given on the command line: a file is itself, a
/// kustomize directory (one with a kustomization file) is rendered whole,
/// and any other directory gives its `*.yaml`/`*.yml` files, sorted by name
/// and not recursively (as `kubectl apply -f DIR`).
pub fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<Input>, ManifestError> {
    let mut inputs = Vec::new();
    for path in paths {
        let read_error = |source| ManifestError::Read {
            file: path.display().to_string(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(read_error)?;
        if !metadata.is_dir() {
            inputs.push(Input::File(path.clone()));
            continue;
        }
        if kustomization_file(path).is_some() {
            inputs.push(Input::Kustomize(path.clone()));
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(read_error)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|file| {
                file.is_file() && matches!(file.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect();
        if files.is_empty() {
            return Err(ManifestError::EmptyDirectory {
                file: path.display().to_string(),
            });
        }
        files.sort();
        inputs.extend(files.into_iter().map(Input::File));
    }
    Ok(inputs)
}

/// The kustomization file of `dir`, if it is a kustomize directory.
pub fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|file| file.is_file())
}

/// Reads a manifest file as UTF-8 text.
pub fn read_text(path: &Path) -> Result<String, ManifestError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ManifestError::Read {
        file: file.clone(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8 { file })
}

// --- a small YAML tree with the spans we need ------------------------------

#[derive(Debug)]
pub(crate) enum Node {
    Scalar {
        value: String,
        style: ScalarStyle,
        /// Byte range in the text, quotes included.
        span: Range<usize>,
        line: usize,
    },
    Sequence {
        items: Vec<Node>,
        line: usize,
    },
    Mapping {
        entries: Vec<(Node, Node)>,
        /// Byte offset where the mapping starts.
        start: usize,
        line: usize,
    },
    Alias {
        line: usize,
    },
}

impl Node {
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Mapping { entries, .. } => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    pub(crate) fn line(&self) -> usize {
        match self {
            Node::Scalar { line, .. }
            | Node::Sequence { line, .. }
            | Node::Mapping { line, .. }
            | Node::Alias { line } => *line,
        }
    }

    pub(crate) fn items(&self) -> &[Node] {
        match self {
            Node::Sequence { items, .. } => items,
            _ => &[],
        }
    }
}

/// saphyr counts positions in characters; slicing needs bytes.
struct Offsets<'a> {
    text: &'a str,
    ascii: bool,
    chars: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(text: &'a str) -> Offsets<'a> {
        let ascii = text.is_ascii();
        let chars = if ascii {
            Vec::new()
        } else {
            text.char_indices().map(|(byte, _)| byte).collect()
        };
        Offsets { text, ascii, chars }
    }

    fn byte(&self, char_index: usize) -> usize {
        if self.ascii {
            char_index
        } else {
            self.chars.get(char_index).copied().unwrap_or(self.text.len())
        }
    }

    fn range(&self, span: &Span) -> Range<usize> {
        self.byte(span.start.index())..self.byte(span.end.index())
    }
}

enum Open {
    Sequence(Vec<Node>, usize),
    Mapping(Vec<(Node, Node)>, Option<Node>, usize, usize),
}

/// Parses every document of `text` into a tree of nodes with spans.
pub(crate) fn parse_documents(name: &str, text: &str) -> Result<Vec<Node>, ManifestError> {
    let offsets = Offsets::new(text);
    let mut documents = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|error| ManifestError::Parse {
            file: name.to_string(),
            line: error.marker().line(),
            column: error.marker().col() + 1,
            message: error.info().to_string(),
        })?;
        let line = span.start.line();
        let node = match event {
            Event::Scalar(value, style, _, _) => Node::Scalar {
                value: value.into_owned(),
                style,
                span: offsets.range(&span),
                line,
            },
            Event::Alias(_) => Node::Alias { line },
            Event::SequenceStart(..) => {
                stack.push(Open::Sequence(Vec::new(), line));
                continue;
            }
            Event::MappingStart(..) => {
                stack.push(Open::Mapping(
                    Vec::new(),
                    None,
                    offsets.byte(span.start.index()),
                    line,
                ));
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Open::Sequence(items, line)) => Node::Sequence { items, line },
                _ => unreachable!("the parser balances sequences"),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Open::Mapping(entries, _, start, line)) => Node::Mapping { entries, start, line },
                _ => unreachable!("the parser balances mappings"),
            },
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => continue,
        };
        match stack.last_mut() {
            None => documents.push(node),
            Some(Open::Sequence(items, _)) => items.push(node),
            Some(Open::Mapping(entries, key, _, _)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
    Ok(documents)
}

/// The pod spec of a workload, by kind.
fn pod_spec<'a>(kind: &str, object: &'a Node) -> Option<&'a Node> {
    let spec = object.get("spec")?;
    match kind {
        "Pod" => Some(spec),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            spec.get("template")?.get("spec")
        }
        "CronJob" => spec.get("jobTemplate")?.get("spec")?.get("template")?.get("spec"),
        _ => None,
    }
}

fn collect_objects(
    file: &str,
    document: &Node,
    objects: &mut Vec<ObjectName>,
    images: &mut Vec<ContainerImage>,
) -> Result<(), ManifestError> {
    let Some(kind) = document.get("kind").and_then(Node::as_str) else {
        return Ok(());
    };
    // `kubectl get -o yaml` writes a List of objects.
    if kind == "List" {
        for item in document.get("items").map(Node::items).unwrap_or_default() {
            collect_objects(file, item, objects, images)?;
        }
        return Ok(());
    }
    let metadata = document.get("metadata");
    let object = ObjectName {
        kind: kind.to_string(),
        name: metadata
            .and_then(|m| m.get("name"))
            .and_then(Node::as_str)
            .unwrap_or("")
            .to_string(),
        namespace: metadata
            .and_then(|m| m.get("namespace"))
            .and_then(Node::as_str)
            .map(str::to_string),
    };
    objects.push(object.clone());
    let Some(spec) = pod_spec(kind, document) else {
        return Ok(());
    };
    for field in CONTAINER_FIELDS {
        for container in spec.get(field).map(Node::items).unwrap_or_default() {
            let name = container
                .get("name")
                .and_then(Node::as_str)
                .unwrap_or("")
                .to_string();
            let Some(image) = container.get("image") else {
                continue;
            };
            let unsupported = |what| ManifestError::UnsupportedImage {
                file: file.to_string(),
                line: image.line(),
                object: object.to_string(),
                container: name.clone(),
                what,
            };
            match image {
                Node::Scalar {
                    value,
                    style,
                    span,
                    line,
                } => {
                    let quote = match style {
                        ScalarStyle::Plain => None,
                        ScalarStyle::SingleQuoted => Some('\''),
                        ScalarStyle::DoubleQuoted => Some('"'),
                        ScalarStyle::Literal | ScalarStyle::Folded => {
                            return Err(unsupported("a block scalar"));
                        }
                    };
                    images.push(ContainerImage {
                        object: object.clone(),
                        field,
                        container: name.clone(),
                        image: value.clone(),
                        line: *line,
                        span: span.clone(),
                        quote,
                    });
                }
                Node::Alias { .. } => return Err(unsupported("an alias (*anchor)")),
                _ => return Err(unsupported("not a string")),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = "\
# The IAM service.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: iam   # keep
  namespace: iam
spec:
  template:
    spec:
      initContainers:
      - name: migrate
        image: \"dev.example.com/onestream/iam-migrate:1.0\"
      containers:
        - name: iam
          image: dev.example.com/onestream/iam:1.0 # pinned by os-deploy
        - name: proxy
          image: 'nginx'
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: report, image: localhost:5000/reports:2}]
";

    #[test]
    fn finds_every_container_image_with_its_object() {
        let manifest = Manifest::parse("deploy.yaml", DEPLOYMENT.to_string()).unwrap();
        let found: Vec<(String, &str, &str, &str, usize)> = manifest
            .images
            .iter()
            .map(|i| {
                (
                    i.object.to_string(),
                    i.field,
                    i.container.as_str(),
                    i.image.as_str(),
                    i.line,
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (
                    "Deployment/iam (namespace iam)".to_string(),
                    "initContainers",
                    "migrate",
                    "dev.example.com/onestream/iam-migrate:1.0",
                    12
                ),
                (
                    "Deployment/iam (namespace iam)".to_string(),
                    "containers",
                    "iam",
                    "dev.example.com/onestream/iam:1.0",
                    15
                ),
                (
                    "Deployment/iam (namespace iam)".to_string(),
                    "containers",
                    "proxy",
                    "nginx",
                    17
                ),
                (
                    "CronJob/nightly".to_string(),
                    "containers",
                    "report",
                    "localhost:5000/reports:2",
                    27
                ),
            ]
        );
    }

    #[test]
    fn rewriting_touches_only_the_image_scalars() {
        let manifest = Manifest::parse("deploy.yaml", DEPLOYMENT.to_string()).unwrap();
        let out = manifest.rewritten(&[
            (0, "prod/m@sha256:1".to_string()),
            (2, "docker.io/library/nginx@sha256:2".to_string()),
            (3, "localhost:5000/reports@sha256:3".to_string()),
        ]);
        let expected = DEPLOYMENT
            .replace(
                "\"dev.example.com/onestream/iam-migrate:1.0\"",
                "\"prod/m@sha256:1\"",
            )
            .replace("'nginx'", "'docker.io/library/nginx@sha256:2'")
            .replace("localhost:5000/reports:2", "localhost:5000/reports@sha256:3");
        assert_eq!(out, expected);
    }

    #[test]
    fn non_ascii_text_keeps_byte_offsets_right() {
        let text = "# Dienst für Übersetzungen ✓\nkind: Pod\nmetadata: {name: ü}\nspec:\n  containers:\n  - name: a\n    image: app:1 # ✓\n";
        let manifest = Manifest::parse("pod.yaml", text.to_string()).unwrap();
        let out = manifest.rewritten(&[(0, "r/app@sha256:9".to_string())]);
        assert_eq!(out, text.replace("app:1", "r/app@sha256:9"));
    }

    #[test]
    fn parse_errors_name_the_file_and_line() {
        let error = Manifest::parse(
            "bad.yaml",
            "kind: Pod\nspec:\n  containers: [\n  - a\n".to_string(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("bad.yaml:"), "{error}");
        let line: usize = error.split(':').nth(1).unwrap().parse().unwrap();
        assert!((3..=5).contains(&line), "{error}");
    }

    #[test]
    fn block_and_alias_images_are_refused_by_name() {
        let text =
            "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: |\n      app:1\n";
        let error = Manifest::parse("p.yaml", text.to_string())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("p.yaml:") && error.contains("block scalar"),
            "{error}"
        );
        let text = "x: &img app:1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: *img\n";
        let error = Manifest::parse("p.yaml", text.to_string())
            .unwrap_err()
            .to_string();
        assert!(error.contains("alias"), "{error}");
    }
}
