//! An accepted import as ARM's long-running operation, polled at its
//! `Location`.
//!
//! The accepted importImage answers 202 with
//! `Location: {endpoint}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/locations/{location}/operationResults/operationStatuses/registries-{guid}?api-version=…`
//! (the spec example's shape), `Retry-After`
//! ([`ArmConfig::retry_after_secs`](super::ArmConfig::retry_after_secs)) and
//! no body, and its copy starts in a thread (`copy.rs`).
//!
//! `GET` the `Location`: 202 (again with `Location` and `Retry-After`)
//! while the copy runs and for the first
//! [`ArmConfig::polls_before_done`](super::ArmConfig::polls_before_done)
//! polls, then 200 with an empty body on success, or the failure as its
//! status and ARM error body (without `Retry-After`, which Azure's
//! clients would take as "try again"): exactly what `ARMPolling`'s
//! Location algorithm reads.

use std::sync::Arc;

use serde_json::{Value, json};

use super::copy::Job;
use super::http::{Reply, arm_error, empty, throttled};
use super::{API_VERSION, AcrEntry, Fault, PROVIDER, State, guid};

/// How an import failed: the poll's status and ARM error.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    status: u16,
    code: &'static str,
    message: String,
}

pub(super) fn failure(status: u16, code: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        code,
        message: message.into(),
    }
}

/// One accepted import: its outcome once the copy ends, the 202s answered.
pub(super) struct Operation {
    pub(super) outcome: Option<Result<(), Failure>>,
    answered_202: u32,
    location: String,
}

impl From<Failure> for Reply {
    fn from(failure: Failure) -> Reply {
        arm_error(failure.status, failure.code, failure.message)
    }
}

/// Registers the accepted import, starts its copy in a thread and answers
/// 202 with the `Location` to poll.
pub(super) fn accept(state: &Arc<State>, target: &AcrEntry, parameters: Value, job: Job) -> Reply {
    let config = &state.config;
    let id = format!("registries-{}", guid());
    let location = format!(
        "{}/subscriptions/{}/resourceGroups/{}/providers/{PROVIDER}/locations/{}/operationResults/operationStatuses/{id}?api-version={API_VERSION}",
        state.base, config.subscription, target.resource_group, target.location
    );
    state
        .imports
        .lock()
        .unwrap()
        .push(json!({ "registry": target.name, "body": parameters }));
    state.operations.lock().unwrap().insert(
        id.clone(),
        Operation {
            outcome: None,
            answered_202: 0,
            location: location.clone(),
        },
    );
    let worker = {
        let (state, id) = (Arc::clone(state), id.clone());
        std::thread::spawn(move || {
            let outcome = job.run();
            if let Some(operation) = state.operations.lock().unwrap().get_mut(&id) {
                operation.outcome = Some(outcome);
            }
        })
    };
    state.workers.lock().unwrap().push(worker);
    let mut accepted = empty(202);
    accepted.headers.push(("Location", location));
    accepted
        .headers
        .push(("Retry-After", config.retry_after_secs.to_string()));
    accepted
}

pub(super) fn poll(state: &State, id: &str) -> Reply {
    if state.take_fault(|f| *f == Fault::ThrottlePoll).is_some() {
        return throttled("read", &state.config.subscription, 1);
    }
    let mut operations = state.operations.lock().unwrap();
    let Some(operation) = operations.get_mut(id) else {
        return arm_error(
            404,
            "OperationNotFound",
            format!("The operation '{id}' could not be found."),
        );
    };
    let finished = operation.outcome.is_some() && operation.answered_202 >= state.config.polls_before_done;
    if !finished {
        operation.answered_202 += 1;
        let mut running = empty(202);
        running.headers.push(("Location", operation.location.clone()));
        running
            .headers
            .push(("Retry-After", state.config.retry_after_secs.to_string()));
        return running;
    }
    match operation.outcome.clone().expect("finished") {
        Ok(()) => empty(200),
        Err(failure) => failure.into(),
    }
}
