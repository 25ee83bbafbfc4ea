//! Which shard this process runs: `--shards K --shard I`, or the index a scheduler's array job
//! gives each task in its environment. Only the binary reads the environment; the library
//! takes a [`Shard`].

use simsweep::Shard;

/// Where the shard index came from, for the log line that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardChoice {
    /// The shard.
    pub shard: Shard,
    /// How it was chosen, e.g. `--shard 2` or `SLURM_ARRAY_TASK_ID=3 - SLURM_ARRAY_TASK_MIN=1`.
    pub source: String,
}

/// The scheduler variables that give an array task's index, in the order they are looked at:
/// Slurm job arrays (minus `SLURM_ARRAY_TASK_MIN`, so `--array=1-4` works), Kubernetes Indexed
/// Jobs, HyperQueue task arrays.
pub const INDEX_VARIABLES: [&str; 3] =
    ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "HQ_TASK_ID"];

/// The shard of this run from the flags and the environment (`env` looks a variable up), or
/// `None` when neither `--shards` nor `--shard` is given (an unsharded run, whatever the
/// environment holds).
///
/// `--shards` defaults to `SLURM_ARRAY_TASK_COUNT`; `--shard` to the first of
/// [`INDEX_VARIABLES`] that is set.
///
/// # Errors
/// A message naming the flag or variable and what to change when the count or index is
/// missing, not a whole number, or out of range.
pub fn choose_shard(
    shards: Option<u32>,
    shard: Option<u32>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ShardChoice>, String> {
    if shards.is_none() && shard.is_none() {
        return Ok(None);
    }
    let number = |name: &str, value: String| -> Result<u32, String> {
        value.trim().parse::<u32>().map_err(|_| {
            format!("environment variable {name}: `{value}` is not a shard index or count (a whole number ≥ 0)")
        })
    };
    let count = match shards {
        Some(k) => k,
        None => match env("SLURM_ARRAY_TASK_COUNT") {
            Some(v) => number("SLURM_ARRAY_TASK_COUNT", v)?,
            None => {
                return Err("--shard needs --shards K (the number of shards; under a Slurm array \
                            SLURM_ARRAY_TASK_COUNT gives it)"
                    .to_string())
            }
        },
    };
    let (index, source) = match shard {
        Some(i) => (i, format!("--shard {i}")),
        None => {
            let Some((name, value)) =
                INDEX_VARIABLES.iter().find_map(|name| env(name).map(|v| (*name, v)))
            else {
                return Err(format!(
                    "--shards {count} needs --shard I (0 to {}), or a scheduler array that sets \
                     one of {}",
                    count.saturating_sub(1),
                    INDEX_VARIABLES.join(", ")
                ));
            };
            let id = number(name, value)?;
            if name == "SLURM_ARRAY_TASK_ID" {
                let min = match env("SLURM_ARRAY_TASK_MIN") {
                    Some(v) => number("SLURM_ARRAY_TASK_MIN", v)?,
                    None => 0,
                };
                let index = id.checked_sub(min).ok_or_else(|| {
                    format!("SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}")
                })?;
                (index, format!("SLURM_ARRAY_TASK_ID={id} - SLURM_ARRAY_TASK_MIN={min}"))
            } else {
                (id, format!("{name}={id}"))
            }
        }
    };
    let shard = Shard::new(index, count).map_err(|e| format!("{source}, --shards {count}: {e}"))?;
    Ok(Some(ShardChoice { shard, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn flags_win_and_no_flags_means_unsharded() {
        let slurm = [("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "4")];
        assert_eq!(choose_shard(None, None, env(&slurm)), Ok(None));
        let got = choose_shard(Some(8), Some(5), env(&slurm)).unwrap().unwrap();
        assert_eq!((got.shard, got.source.as_str()), (Shard::new(5, 8).unwrap(), "--shard 5"));
    }

    #[test]
    fn scheduler_variables() {
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        let got = choose_shard(None, Some(0), env(&slurm)).unwrap().unwrap();
        assert_eq!(got.shard, Shard::new(0, 4).unwrap(), "count from SLURM_ARRAY_TASK_COUNT");
        let got = choose_shard(Some(4), None, env(&slurm)).unwrap().unwrap();
        assert_eq!(got.shard, Shard::new(2, 4).unwrap());
        assert_eq!(got.source, "SLURM_ARRAY_TASK_ID=3 - SLURM_ARRAY_TASK_MIN=1");
        let k8s = [("JOB_COMPLETION_INDEX", "1")];
        let got = choose_shard(Some(2), None, env(&k8s)).unwrap().unwrap();
        assert_eq!((got.shard.index, got.source.as_str()), (1, "JOB_COMPLETION_INDEX=1"));
        let hq = [("HQ_TASK_ID", "0")];
        assert_eq!(choose_shard(Some(3), None, env(&hq)).unwrap().unwrap().shard.index, 0);
    }

    #[test]
    fn refusals_name_what_to_change() {
        let err = choose_shard(Some(4), None, env(&[])).unwrap_err();
        assert!(err.contains("--shard I (0 to 3)") && err.contains("HQ_TASK_ID"), "{err}");
        let err = choose_shard(None, Some(1), env(&[])).unwrap_err();
        assert!(err.contains("--shards K"), "{err}");
        let err = choose_shard(Some(4), Some(4), env(&[])).unwrap_err();
        assert!(err.contains("shard 4 does not exist among 4 shards"), "{err}");
        let err = choose_shard(Some(0), Some(0), env(&[])).unwrap_err();
        assert!(err.contains("at least 1"), "{err}");
        let err = choose_shard(Some(4), None, env(&[("HQ_TASK_ID", "x")])).unwrap_err();
        assert!(err.contains("HQ_TASK_ID: `x`"), "{err}");
        let err = choose_shard(
            Some(4),
            None,
            env(&[("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_TASK_MIN", "1")]),
        )
        .unwrap_err();
        assert!(err.contains("below SLURM_ARRAY_TASK_MIN=1"), "{err}");
    }
}
