//! `--via acr-import`: the target registry copies the image itself (Azure
//! Container Registry's `importImage`, always by digest), so no layer
//! passes through this process. ACR's import carries nothing attached to
//! the image, so the attachments then go the usual way, and the target is
//! checked for the image, its tags and every attachment afterwards.
//!
//! Here: which way a record goes ([`Route`]), and the server-side import.

use std::time::Duration;

use super::{Copied, Copier, ImportError};
use crate::azure::arm::{
    AcrResource, ArmError, ImportCredentials, ImportImage, ImportSource, ResourceManager, is_acr_host,
};
use crate::azure::{AzureCredential, CredentialKind};
use crate::oci::credentials::Credential;
use crate::oci::digest::Digest;
use crate::oci::manifest;
use crate::oci::reference::RegistryRef;
use crate::oci::registry::ACR_TOKEN_USER;
use crate::oci::store::Place;

/// ACR imports at most this many manifests per image (its documented limit).
pub const ACR_MANIFEST_LIMIT: usize = 50;

/// `--via`: how the bytes get to the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Via {
    /// This process copies every blob (the default).
    #[default]
    Copy,
    /// The target ACR imports the image server-side.
    AcrImport,
    /// `acr-import` where the target is an ACR of the subscription and an
    /// Azure credential works, else `copy`.
    Auto,
}

impl Via {
    pub const ALL: [Via; 3] = [Via::Copy, Via::AcrImport, Via::Auto];

    pub fn name(self) -> &'static str {
        match self {
            Via::Copy => "copy",
            Via::AcrImport => "acr-import",
            Via::Auto => "auto",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Via::Copy => "This process copies the blobs (works between any registries and layouts)",
            Via::AcrImport => {
                "The target Azure Container Registry imports the image itself (ARM importImage); \
                 the attachments are then carried by this process"
            }
            Via::Auto => {
                "acr-import when the target is an ACR of the subscription and a credential works, else copy"
            }
        }
    }
}

/// What `--via acr-import|auto` needs to reach Resource Manager.
#[derive(Clone, Debug)]
pub struct ServerSideOptions {
    pub via: Via,
    /// `--subscription`, else `AZURE_SUBSCRIPTION_ID`.
    pub subscription: Option<String>,
    /// `--arm-endpoint`, else public Azure's.
    pub arm_endpoint: Option<String>,
    pub credential: CredentialKind,
    /// `--force`: let an import move a target tag that names another digest.
    pub force: bool,
    /// `--timeout`: how long one import operation may run.
    pub timeout: Duration,
}

impl Default for ServerSideOptions {
    fn default() -> Self {
        ServerSideOptions {
            via: Via::Copy,
            subscription: None,
            arm_endpoint: None,
            credential: CredentialKind::Auto,
            force: false,
            timeout: Duration::from_secs(600),
        }
    }
}

/// The run's way to Resource Manager: none under `copy`; under `auto`, why
/// not when it cannot be had.
pub(super) struct ServerSide {
    options: ServerSideOptions,
    arm: Result<ResourceManager, String>,
}

/// Which way one record goes, and why.
pub(super) enum Route {
    Copy {
        reason: Option<String>,
    },
    Server {
        target: AcrResource,
        source: Option<AcrResource>,
    },
}

/// What the server-side import did, for the event.
pub(super) struct ServerImport {
    /// ARM's operation id; `None` when the target had everything already.
    pub operation: Option<String>,
    /// Tags that named another digest and were moved (`--force`).
    pub moved: Vec<String>,
}

impl ServerSide {
    /// Under `acr-import`, a setting that cannot work is an error now;
    /// under `auto` it only sends every record the `copy` way.
    pub(super) fn new(options: ServerSideOptions) -> Result<ServerSide, ArmError> {
        let arm = match options.via {
            Via::Copy => Err("--via copy".to_string()),
            _ => match Self::connect(&options) {
                Ok(arm) => Ok(arm),
                Err(error) if options.via == Via::Auto => Err(error.to_string()),
                Err(error) => return Err(error),
            },
        };
        Ok(ServerSide { options, arm })
    }

    fn connect(options: &ServerSideOptions) -> Result<ResourceManager, ArmError> {
        let subscription = options
            .subscription
            .clone()
            .or_else(|| std::env::var("AZURE_SUBSCRIPTION_ID").ok());
        let endpoint = options
            .arm_endpoint
            .as_deref()
            .unwrap_or(crate::azure::arm::DEFAULT_ENDPOINT);
        let credential = AzureCredential::with_env(options.credential, |name| std::env::var(name).ok())?;
        ResourceManager::new(std::sync::Arc::new(credential), endpoint, subscription)
    }

    /// The way a record goes. Under `acr-import`, a reason not to import
    /// server-side is an error; under `auto` it is the copy's reason.
    pub(super) async fn route(&self, copier: &Copier<'_>, platforms: bool) -> Result<Route, ImportError> {
        if self.options.via == Via::Copy {
            return Ok(Route::Copy { reason: None });
        }
        let route = self.server_route(copier, platforms).await;
        self.settle(route)
            .map(|route| route.unwrap_or_else(|reason| Route::Copy { reason: Some(reason) }))
    }

    /// A reason not to import server-side: under `auto`, the copy's
    /// (`Ok(Err(reason))`); under `acr-import`, an error.
    fn settle<T>(&self, outcome: Result<T, Refusal>) -> Result<Result<T, String>, ImportError> {
        match outcome {
            Ok(found) => Ok(Ok(found)),
            Err(Refusal::Not(reason)) if self.options.via == Via::Auto => Ok(Err(reason)),
            Err(Refusal::Not(reason)) => Err(ImportError::NotServerSide(reason)),
            Err(Refusal::Failed(error)) => Err(error),
        }
    }

    async fn server_route(&self, copier: &Copier<'_>, platforms: bool) -> Result<Route, Refusal> {
        let arm = self.arm.as_ref().map_err(|why| Refusal::Not(why.clone()))?;
        let (Place::Registry(from), Place::Registry(to)) = (&copier.from, &copier.to) else {
            return Err(Refusal::Not(
                "ACR imports only from a registry into a registry".into(),
            ));
        };
        if platforms {
            return Err(Refusal::Not(
                "--platform makes a new index, which ACR cannot import".into(),
            ));
        }
        let Some(target) = self.listed(arm, &to.registry).await? else {
            let kind = if is_acr_host(&to.registry) {
                "an Azure Container Registry outside"
            } else {
                "not an Azure Container Registry of"
            };
            return Err(Refusal::Not(format!(
                "{} is {kind} subscription {}",
                to.registry,
                arm.subscription()
            )));
        };
        let source = self.listed(arm, &from.registry).await?;
        Ok(Route::Server { target, source })
    }

    /// The subscription's registry at `host`. Under auto, a credential or a
    /// subscription that does not work is a reason to copy, not a failure.
    async fn listed(&self, arm: &ResourceManager, host: &str) -> Result<Option<AcrResource>, Refusal> {
        match arm.registry_for(host).await {
            Ok(found) => Ok(found),
            Err(error) if self.options.via == Via::Auto => Err(Refusal::Not(error.to_string())),
            Err(error) => Err(Refusal::Failed(error.into())),
        }
    }

    /// ACR's documented limits, asked only when an import is needed: no
    /// import from a registry with exports disabled, at most
    /// [`ACR_MANIFEST_LIMIT`] manifests.
    async fn within_limits(
        &self,
        copier: &Copier<'_>,
        digest: &Digest,
        source: Option<&AcrResource>,
        known_type: Option<&str>,
    ) -> Result<(), Refusal> {
        if let Some(source) = source.filter(|s| s.export_disabled) {
            return Err(Refusal::Not(format!(
                "{} has exports disabled, so ACR will not import from it",
                source.name
            )));
        }
        let manifests = manifest_count(copier, digest, known_type)
            .await
            .map_err(Refusal::Failed)?;
        if manifests > ACR_MANIFEST_LIMIT {
            return Err(Refusal::Not(format!(
                "the image has {manifests} manifests; ACR imports at most {ACR_MANIFEST_LIMIT}"
            )));
        }
        Ok(())
    }

    /// The image `digest` imported into `target` under `tags` (the record's
    /// and every `--tag`),
    /// then checked at the target. What the target already has is not
    /// asked for again; a tag naming another digest stops the import unless
    /// `--force`. `Ok(Err(reason))`: past ACR's limits under `auto`, for
    /// the copy to do.
    pub(super) async fn import(
        &self,
        copier: &Copier<'_>,
        (digest, tags): (&Digest, &[String]),
        (target, source): (&AcrResource, Option<&AcrResource>),
        known_type: Option<&str>,
    ) -> Result<Result<(Copied, ServerImport), String>, ImportError> {
        let arm = self.arm.as_ref().expect("a server route has Resource Manager");
        let (Place::Registry(from), Place::Registry(to)) = (&copier.from, &copier.to) else {
            unreachable!("a server route is registry to registry")
        };
        let (stores, place) = (copier.stores, &copier.to);
        let mut pending = Vec::new();
        let mut moved = Vec::new();
        for tag in tags {
            match place.tag_digest(stores, tag).await? {
                Some(current) if current == *digest => {}
                Some(current) if self.options.force => {
                    tracing::warn!("{to}:{tag} names {current}; --force moves it to {digest}");
                    moved.push(tag.clone());
                }
                Some(current) => {
                    return Err(ImportError::TagConflict {
                        target: format!("{}:{tag}", to.name()),
                        current,
                        wanted: digest.clone(),
                    });
                }
                None => pending.push(tag.clone()),
            }
        }
        let names: Vec<String> = pending.iter().chain(&moved).cloned().collect();
        let nothing_to_do = if tags.is_empty() {
            place.has_manifest(stores, digest).await?
        } else {
            names.is_empty()
        };
        let copied = Copied {
            manifest: None,
            digest: digest.clone(),
        };
        if nothing_to_do {
            return Ok(Ok((
                copied,
                ServerImport {
                    operation: None,
                    moved,
                },
            )));
        }
        let limits = self.within_limits(copier, digest, source, known_type).await;
        if let Err(reason) = self.settle(limits)? {
            return Ok(Err(reason));
        }
        let body = ImportImage {
            source: self.source_of(copier, from, digest, source).await?,
            target_tags: names
                .iter()
                .map(|tag| format!("{}:{tag}", to.repository))
                .collect(),
            untagged_target_repositories: if names.is_empty() {
                vec![to.repository.clone()]
            } else {
                Vec::new()
            },
            mode: if self.options.force { "Force" } else { "NoForce" },
        };
        let imported = arm.import_image(target, &body, self.options.timeout).await?;
        tracing::debug!(
            "{}: imported {} (operation {}, {} polls)",
            target.name,
            body.source.source_image,
            imported.operation,
            imported.polls
        );
        if !place.has_manifest(stores, digest).await? {
            return Err(ImportError::Missing {
                what: format!("{}@{digest} after ACR's import", to.name()),
            });
        }
        for tag in &names {
            if let Some(current) = place.tag_digest(stores, tag).await?
                && current != *digest
            {
                return Err(ImportError::TagConflict {
                    target: format!("{}:{tag}", to.name()),
                    current,
                    wanted: digest.clone(),
                });
            }
        }
        let operation = Some(imported.operation);
        Ok(Ok((copied, ServerImport { operation, moved })))
    }

    /// Where ACR pulls from: a registry of the subscription by its resource
    /// id (ACR authorizes that itself), any other by its host with the
    /// credential this run would use for it.
    async fn source_of(
        &self,
        copier: &Copier<'_>,
        from: &RegistryRef,
        digest: &Digest,
        source: Option<&AcrResource>,
    ) -> Result<ImportSource, ImportError> {
        let source_image = format!("{}@{digest}", from.repository);
        if let Some(source) = source {
            return Ok(ImportSource {
                resource_id: Some(source.id.clone()),
                registry_uri: None,
                source_image,
                credentials: None,
            });
        }
        let credentials = match copier.stores.registry().credential(&from.registry).await? {
            Some(Credential::Basic { username, password }) => Some(ImportCredentials { username, password }),
            Some(Credential::IdentityToken(token)) => Some(ImportCredentials {
                username: ACR_TOKEN_USER.to_string(),
                password: token,
            }),
            None => None,
        };
        Ok(ImportSource {
            resource_id: None,
            registry_uri: Some(from.registry.clone()),
            source_image,
            credentials,
        })
    }
}

enum Refusal {
    /// Not possible server-side, and why.
    Not(String),
    Failed(ImportError),
}

/// The manifests ACR would import: the image, and an index's children.
async fn manifest_count(
    copier: &Copier<'_>,
    digest: &Digest,
    known_type: Option<&str>,
) -> Result<usize, ImportError> {
    if known_type.is_some_and(|t| !manifest::is_index(t)) {
        return Ok(1);
    }
    let bytes = copier.from.manifest(copier.stores, digest).await?;
    let children = manifest::index_entries(&bytes).map(|e| e.len()).unwrap_or(0);
    Ok(1 + children)
}
