//! Jobs: what a client submits ([`proto::JobSpec`] on the wire), how the daemon
//! checks it ([`Work`]), and the record it keeps of each job ([`JobRecord`]).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::proto;

/// The priority of a job submitted without one.
pub const DEFAULT_PRIORITY: u8 = 10;

/// Where a job is in its life. The last four are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, waiting for its dependencies or for a free slot.
    Queued,
    /// Running on the kernel.
    Running,
    /// Ended well (an exec job: exit code 0).
    Succeeded,
    /// Ended badly: a non-zero exit, a command that could not start.
    Failed,
    /// Cancelled by a client, or because a dependency did not succeed.
    Cancelled,
    /// Stopped because its timeout passed.
    TimedOut,
}

impl JobState {
    /// Every state, in order.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
    ];

    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }

    /// The state's name: `queued`, `running`, `succeeded`, `failed`,
    /// `cancelled`, `timed_out`.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
        }
    }

    /// The state named `name` (as [`name`](Self::name) spells it).
    pub fn from_name(name: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The wire enum.
    pub fn to_proto(self) -> proto::JobState {
        match self {
            JobState::Queued => proto::JobState::Queued,
            JobState::Running => proto::JobState::Running,
            JobState::Succeeded => proto::JobState::Succeeded,
            JobState::Failed => proto::JobState::Failed,
            JobState::Cancelled => proto::JobState::Cancelled,
            JobState::TimedOut => proto::JobState::TimedOut,
        }
    }

    /// From the wire enum (`None` for unspecified).
    pub fn from_proto(state: proto::JobState) -> Option<JobState> {
        Some(match state {
            proto::JobState::Unspecified => return None,
            proto::JobState::Queued => JobState::Queued,
            proto::JobState::Running => JobState::Running,
            proto::JobState::Succeeded => JobState::Succeeded,
            proto::JobState::Failed => JobState::Failed,
            proto::JobState::Cancelled => JobState::Cancelled,
            proto::JobState::TimedOut => JobState::TimedOut,
        })
    }
}

/// The captured output of an exec job, kept for `Logs`. Stored as text
/// (invalid UTF-8 is replaced), at most the capture limit per stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Standard output, up to the capture limit.
    pub stdout: String,
    /// Standard error, up to the capture limit.
    pub stderr: String,
    /// Whether stdout went past the limit.
    #[serde(default)]
    pub stdout_truncated: bool,
    /// Whether stderr went past the limit.
    #[serde(default)]
    pub stderr_truncated: bool,
}

/// Everything the daemon knows of a job: what was asked, and what became
/// of it. This is what the job log stores (see [`crate::store`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// 64-bit, increasing, never reused (also across restarts).
    pub id: u64,
    /// `exec`, `sleep` or `python`.
    pub kind: String,
    /// The kind's arguments, JSON text as submitted.
    pub args: String,
    /// 0 (first) to 255 (last).
    pub priority: u8,
    /// Jobs that must succeed first.
    #[serde(default)]
    pub after: Vec<u64>,
    /// The idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Seconds the job may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Where the job is.
    pub state: JobState,
    /// How many times it has started.
    #[serde(default)]
    pub attempts: u32,
    /// An exec job's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The result, JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Why it failed, was cancelled or timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix seconds.
    pub created_at: f64,
    /// Unix seconds, of the last start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    /// An exec job's captured output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
}

impl JobRecord {
    /// The wire form (without the output, which `Logs` serves).
    pub fn to_proto(&self) -> proto::Job {
        proto::Job {
            id: self.id,
            kind: self.kind.clone(),
            args: self.args.clone(),
            priority: u32::from(self.priority),
            after: self.after.clone(),
            key: self.key.clone(),
            timeout_seconds: self.timeout,
            state: self.state.to_proto() as i32,
            attempts: self.attempts,
            exit_code: self.exit_code,
            result: self.result.clone(),
            error: self.error.clone(),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }
}

/// Now, in Unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What a job runs, checked and decoded from its kind and args.
#[derive(Clone, Debug, PartialEq)]
pub enum Work {
    /// Run a command.
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
        /// Variables added to the daemon's environment.
        env: BTreeMap<String, String>,
        /// Working directory.
        cwd: Option<String>,
        /// Bytes for stdin.
        stdin: Option<String>,
    },
    /// Sleep.
    Sleep(Duration),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecArgs {
    argv: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    stdin: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    seconds: f64,
}

impl Work {
    /// Decodes `args` (JSON text) for `kind`, or says what is wrong.
    pub fn parse(kind: &str, args: &str) -> Result<Work, String> {
        let args = if args.trim().is_empty() { "{}" } else { args };
        match kind {
            "exec" => {
                let a: ExecArgs = serde_json::from_str(args)
                    .map_err(|e| format!("exec args: {e} (expected {{\"argv\": [...], \"env\": {{...}}, \"cwd\": \"...\", \"stdin\": \"...\"}})"))?;
                if a.argv.is_empty() || a.argv[0].is_empty() {
                    return Err("exec args: argv must name a program".into());
                }
                let nul = a.argv.iter().any(|s| s.contains('\0'))
                    || a.env
                        .iter()
                        .any(|(k, v)| k.contains(['\0', '=']) || k.is_empty() || v.contains('\0'))
                    || a.cwd.as_deref().is_some_and(|c| c.contains('\0'));
                if nul {
                    return Err(
                        "exec args: NUL byte in argv, env or cwd, or a bad variable name".into(),
                    );
                }
                Ok(Work::Exec {
                    argv: a.argv,
                    env: a.env,
                    cwd: a.cwd,
                    stdin: a.stdin,
                })
            }
            "sleep" => {
                let a: SleepArgs = serde_json::from_str(args)
                    .map_err(|e| format!("sleep args: {e} (expected {{\"seconds\": s}})"))?;
                if !a.seconds.is_finite() || a.seconds < 0.0 || a.seconds > 1e9 {
                    return Err("sleep args: seconds must be a number from 0 to 1e9".into());
                }
                Ok(Work::Sleep(Duration::from_secs_f64(a.seconds)))
            }
            "python" => Err("kind python needs a daemon hosted by Python (tiffany.serve)".into()),
            "" => Err("kind is missing (exec or sleep)".into()),
            other => Err(format!("unknown kind {other:?} (exec or sleep)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert!(matches!(
            Work::parse("sleep", r#"{"seconds": 0.5}"#),
            Ok(Work::Sleep(_))
        ));
        assert!(Work::parse("sleep", r#"{"seconds": "x"}"#).is_err());
        assert!(Work::parse("sleep", r#"{"seconds": -1}"#).is_err());
        assert!(Work::parse("exec", r#"{"argv": []}"#).is_err());
        assert!(Work::parse("exec", r#"not json"#).is_err());
        assert!(Work::parse("nope", "{}").is_err());
        assert!(Work::parse("exec", r#"{"argv": ["true"], "env": {"A": "1"}}"#).is_ok());
        for s in JobState::ALL {
            assert_eq!(JobState::from_name(s.name()), Some(s));
        }
    }
}
