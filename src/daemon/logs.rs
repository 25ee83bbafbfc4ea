//! Each job's warnings and errors, kept with its events: a `tracing` layer that records the
//! WARN and ERROR events emitted inside a `job{id=…}` span (every actor of a run enters it) as
//! `log` events of that job in the registry, for `GET /v1/jobs/{id}/logs` and the event stream.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, Weak};

use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::Daemon;

/// The layer; [`JobLogs::attach`] tells it the daemon once it exists.
#[derive(Clone, Default)]
pub struct JobLogs(Arc<OnceLock<Weak<Daemon>>>);

impl JobLogs {
    /// Records into `daemon`'s registry from now on.
    pub fn attach(&self, daemon: &Arc<Daemon>) {
        let _ = self.0.set(Arc::downgrade(daemon));
    }

    /// What the layer needs to see: `job` spans, and WARN/ERROR events.
    pub fn filter<S>() -> impl Filter<S> {
        tracing_subscriber::filter::filter_fn(|meta: &Metadata<'_>| {
            (meta.is_span() && meta.name() == "job")
                || (meta.is_event() && *meta.level() <= Level::WARN)
        })
    }
}

/// The `id` field of a `job` span, kept in its extensions.
struct JobId(String);

#[derive(Default)]
struct Fields {
    id: Option<String>,
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "id" => self.id = Some(format!("{value:?}")),
            "message" => self.message = format!("{value:?}"),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "id" => self.id = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }
}

impl<S> Layer<S> for JobLogs
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "job" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(job), Some(span)) = (fields.id, ctx.span(id)) {
            span.extensions_mut().insert(JobId(job));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(daemon) = self.0.get().and_then(Weak::upgrade) else { return };
        let Some(scope) = ctx.event_scope(event) else { return };
        let job = scope
            .into_iter()
            .find_map(|span| span.extensions().get::<JobId>().map(|j| j.0.clone()));
        let Some(job) = job else { return };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let data = json!({
            "level": meta.level().as_str(),
            "target": meta.target(),
            "message": format!("{}{}", fields.message, fields.rest),
            "at": crate::engine::output::utc_now_rfc3339(),
        });
        daemon.record_log(&job, &data.to_string());
    }
}
