//! `os-deploy apply`: server-side apply, a rollout wait for every
//! workload, and a rollback of what this run changed when one fails.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::{Batch, Failure, Options, Outcome, Placement, Plan, STEP, Target, finish};
use crate::kube::kubectl::{self, Rollout};
use crate::kube::manifest::{self, ObjectName};
use crate::pipeline::exit;
use crate::record::ErrorCode;

pub struct ApplyOptions {
    pub namespace: String,
    pub timeout: Duration,
}

/// What each workload container ran before the apply, from the cluster.
fn live_images(live: &Value) -> BTreeMap<(String, String, String), String> {
    let mut images = BTreeMap::new();
    for item in live["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let kind = item["kind"].as_str().unwrap_or_default().to_string();
        let name = item["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let spec = match kind.as_str() {
            "CronJob" => &item["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            "Pod" => &item["spec"],
            _ => &item["spec"]["template"]["spec"],
        };
        for field in manifest::CONTAINER_FIELDS {
            for container in spec[field].as_array().map(Vec::as_slice).unwrap_or_default() {
                if let (Some(container), Some(image)) =
                    (container["name"].as_str(), container["image"].as_str())
                {
                    images.insert(
                        (kind.clone(), name.clone(), container.to_string()),
                        image.to_string(),
                    );
                }
            }
        }
    }
    images
}

/// `apply`: server-side apply of the pinned manifests, then a rollout wait
/// for every workload; a failed or timed-out rollout is undone (with every
/// other workload this run changed) and the batch fails.
pub fn apply(
    options: &Options,
    apply: &ApplyOptions,
    plan: &Plan,
    batch: Batch,
    say: &mut dyn FnMut(String),
) -> Outcome {
    let kubectl = &options.kubectl;
    let context = kubectl.context_name();
    // Before the change: what runs now, for the record and to know what a
    // rollback can return to.
    let before = match snapshot(options, apply, plan) {
        Ok(before) => before,
        Err(failure) => return batch.refuse(Some(failure)),
    };
    let previous = |p: &Placement| {
        before
            .get(&(p.object.kind.clone(), p.object.name.clone(), p.container.clone()))
            .cloned()
    };
    if let Err(error) = kubectl.apply(&apply.namespace, &plan.joined()) {
        return batch.refuse(Some(Failure::new(
            ErrorCode::ApplyFailed,
            format!("{error} (objects applied before the failure stay applied: kubectl get them)"),
        )));
    }
    let changed: Vec<ObjectName> = unique(
        plan.placements
            .iter()
            .filter(|p| kubectl::has_rollout(&p.object.kind))
            .filter(|p| previous(p).is_some_and(|before| before != pinned_of(&batch, p)))
            .map(|p| p.object.clone()),
    );
    // Every workload the manifests hold rolls out, not only those whose
    // image this run pinned: their templates may have changed too.
    let workloads: Vec<ObjectName> = unique(
        plan.manifests
            .iter()
            .flat_map(|m| m.objects.iter())
            .filter(|o| kubectl::has_rollout(&o.kind))
            .cloned(),
    );
    let failed = wait_for_rollouts(options, apply, &workloads, say);
    let undo_notes = match &failed {
        Some(_) => roll_back(options, apply, &changed, &workloads, say),
        None => Vec::new(),
    };
    let result = if failed.is_some() {
        "rolled-back"
    } else {
        "rolled-out"
    };
    // In an apply, what came before is what the cluster ran (null: a new workload).
    let live_previous = |p: &Placement| previous(p).map_or(Value::Null, Value::from);
    let mut outcome = finish(options, "apply", plan, batch, &live_previous, |event, _| {
        event
            .with("context", context.clone().map_or(Value::Null, Value::from))
            .with("namespace", apply.namespace.clone())
            .with("result", result)
    });
    if let Some(failure) = failed {
        fail_rolled_back(&mut outcome, failure, &undo_notes);
    }
    outcome
}

/// What each container of the plan's workloads runs now, namespace by
/// namespace.
fn snapshot(
    options: &Options,
    apply: &ApplyOptions,
    plan: &Plan,
) -> Result<BTreeMap<(String, String, String), String>, Failure> {
    let objects: Vec<ObjectName> = unique(plan.placements.iter().map(|p| p.object.clone()));
    let namespace_of = |object: &ObjectName| kubectl::namespace_of(object, &apply.namespace).to_string();
    let mut before = BTreeMap::new();
    for namespace in unique(objects.iter().map(namespace_of)) {
        let here: Vec<ObjectName> = objects
            .iter()
            .filter(|o| namespace_of(o) == namespace)
            .cloned()
            .collect();
        let live = options.kubectl.get(&namespace, &here).map_err(|error| {
            Failure::new(ErrorCode::ApplyFailed, format!("reading the workloads: {error}"))
        })?;
        before.extend(live_images(&live));
    }
    Ok(before)
}

/// Waits for each workload's rollout in turn; the first that does not
/// complete ends the wait.
fn wait_for_rollouts(
    options: &Options,
    apply: &ApplyOptions,
    workloads: &[ObjectName],
    say: &mut dyn FnMut(String),
) -> Option<Failure> {
    for object in workloads {
        say(format!("waiting for the rollout of {object}"));
        let (code, why) = match options
            .kubectl
            .rollout_status(&apply.namespace, object, apply.timeout)
        {
            Ok(Rollout::Complete) => continue,
            Ok(Rollout::Failed(why)) => (ErrorCode::RolloutFailed, why),
            Ok(Rollout::TimedOut(why)) => (ErrorCode::RolloutTimeout, why),
            Err(error) => (ErrorCode::RolloutFailed, error.to_string()),
        };
        return Some(Failure::new(
            code,
            format!("rollout of {object} did not complete: {why}"),
        ));
    }
    None
}

/// Undoes the rollout of every workload this run changed; says what became
/// of each, and of the workloads left as applied.
fn roll_back(
    options: &Options,
    apply: &ApplyOptions,
    changed: &[ObjectName],
    workloads: &[ObjectName],
    say: &mut dyn FnMut(String),
) -> Vec<String> {
    let mut notes = Vec::new();
    for object in changed {
        say(format!("rolling back {object}"));
        match options.kubectl.rollout_undo(&apply.namespace, object) {
            Ok(()) => notes.push(format!("{object} rolled back")),
            Err(error) => notes.push(format!("ROLLBACK OF {object} FAILED: {error}")),
        }
    }
    let kept: Vec<String> = workloads
        .iter()
        .filter(|o| !changed.contains(o))
        .map(|o| o.to_string())
        .collect();
    if !kept.is_empty() {
        notes.push(format!(
            "{} left as applied: no earlier image of ours to return to (a new workload, or its image did not change)",
            kept.join(", ")
        ));
    }
    notes
}

/// A rolled-back batch: every record that was deployed leaves as an error
/// record that still carries its deploy event (`result: rolled-back`).
fn fail_rolled_back(outcome: &mut Outcome, failure: Failure, undo_notes: &[String]) {
    let message = if undo_notes.is_empty() {
        failure.message
    } else {
        format!("{}; {}", failure.message, undo_notes.join("; "))
    };
    for record in &mut outcome.records {
        if !record.is_error() {
            record.fail(STEP, failure.code, message.clone());
        }
    }
    outcome.messages.push(message);
    outcome.exit_code = exit::FAILED;
}

fn pinned_of(batch: &Batch, placement: &Placement) -> String {
    batch.entries[placement.entry]
        .target
        .as_ref()
        .map(Target::pinned)
        .unwrap_or_default()
}

fn unique<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}
