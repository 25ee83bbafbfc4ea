//! `simsweep report OUT`: one self-contained HTML file (inline SVG and CSS, no script, no
//! network) with the plots a modeller looks at after a sweep, read from the committed Parquet
//! files in memory bounded by the plots, not by the sweep.
//!
//! Per target: the fit (observations against the replicate bands of the best sets: median and
//! 50%/95% envelopes over replicates of the best, the medians of the next ones), the loss
//! against each parameter (a subsample of every set, the best marked, the lower envelope as a
//! profile), pairwise loss maps (the lowest loss in each cell), and the table of the best sets.
//! The job: spec, progress, throughput over the run, failures by kind.
//!
//! Works on a finished, a running (what is committed) and a sharded output. The best sets of
//! the fit and the table are the refined ones when the output has a finished refine step.

pub mod data;
mod plots;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, UInt32Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use simsweep_engine::output::{
    read_status, Dataset, Manifest, OutputLayout, RunStatus, TargetObservations,
};

use data::{BestK, LossMap, Profile};

/// Parameter sets in the best table and the fit, by default.
pub const DEFAULT_TOP: usize = 5;

/// Most best parameter sets a report shows (more would hide the fit under their lines).
pub const MAX_TOP: usize = 50;

/// What `simsweep report` writes.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Best parameter sets in the fit plot and the table, 1 … [`MAX_TOP`].
    pub top: usize,
    /// Also write every plot as an SVG file into this folder.
    pub svg_dir: Option<PathBuf>,
}

/// Why no report was written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The folder is not a simsweep output (or not an output yet).
    #[error("{}: {message}", dir.display())]
    NotAnOutput {
        /// The folder given.
        dir: PathBuf,
        /// What is wrong and what to give instead.
        message: String,
    },
    /// The output has nothing to plot.
    #[error("{}: {message}", dir.display())]
    NothingToPlot {
        /// The output folder.
        dir: PathBuf,
        /// What is missing and what to do.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ReportError {
    /// True for errors of the input (the folder given), exit code 2 in the command.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, ReportError::Io { .. })
    }
}

fn io(path: &Path, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ReportError {
    ReportError::Io { path: path.to_path_buf(), source: e.into() }
}

/// One output with a manifest: the whole sweep, a shard, or a refine step.
struct Part {
    layout: OutputLayout,
    status: RunStatus,
}

impl Part {
    fn manifest(&self) -> &Manifest {
        &self.status.manifest
    }
}

/// The outputs under `dir`: itself, or its shards.
fn parts_of(dir: &Path) -> Result<Vec<Part>, ReportError> {
    let not_output = |message: String| ReportError::NotAnOutput { dir: dir.to_path_buf(), message };
    if dir.exists() && !dir.is_dir() {
        return Err(not_output(
            "is a file, not an output folder; give the folder a run wrote".into(),
        ));
    }
    if !dir.is_dir() {
        return Err(not_output("no such folder; give the output folder of a run".into()));
    }
    let layout = OutputLayout::new(dir);
    if layout.manifest_path().is_file() {
        let status = read_status(&layout, simsweep_engine::summary::BEST_PER_TARGET)
            .map_err(|e| not_output(e.to_string()))?;
        return Ok(vec![Part { layout, status }]);
    }
    let shards =
        simsweep_engine::output::merge::find_shards(dir).map_err(|e| not_output(e.to_string()))?;
    if shards.is_empty() {
        return Err(not_output(
            "has no manifest.json and no shard folders: not a simsweep output (give the folder \
             a run wrote, its `output`)"
                .into(),
        ));
    }
    let mut parts = Vec::new();
    for (_, path) in shards {
        let layout = OutputLayout::new(&path);
        if !layout.manifest_path().is_file() {
            continue;
        }
        let status = read_status(&layout, simsweep_engine::summary::BEST_PER_TARGET)
            .map_err(|e| not_output(e.to_string()))?;
        parts.push(Part { layout, status });
    }
    Ok(parts)
}

/// A row of a target file, as the report uses it.
#[derive(Debug, Clone)]
struct BestRow {
    param_id: String,
    params: Vec<f64>,
    loss_se: Option<f64>,
    n_replicates: u32,
    n_failed: u32,
    /// The part (output) and batch holding it.
    part: usize,
    batch: u32,
}

/// Everything the report shows of one target's losses, built in two passes over its files.
struct TargetScan {
    params: Vec<String>,
    ranges: Vec<(f64, f64)>,
    rows: u64,
    null: u64,
    nan: u64,
    infinite: u64,
    best: BestK<BestRow>,
    scatter: Vec<(Vec<f64>, f64)>,
    profiles: Vec<Profile>,
    maps: Vec<((usize, usize), LossMap)>,
}

/// Calls `visit` for every row of `target`'s committed files in `parts`, in sweep order:
/// `(param_id, parameter values in `params` order, loss, loss_se, n_replicates, n_failed,
/// order, part, batch)`. `params` empty: taken from the first file (numeric columns that are
/// not simsweep's own).
#[allow(clippy::type_complexity)]
fn scan_rows(
    parts: &[Part],
    target: &str,
    params: &mut Vec<String>,
    mut visit: impl FnMut(&str, &[f64], Option<f64>, Option<f64>, u32, u32, u64, usize, u32),
) -> Result<(), ReportError> {
    const OWN: [&str; 6] = ["param_id", "loss", "loss_se", "n_replicates", "n_failed", "seeds"];
    let dataset = Dataset::Target(target.to_string());
    let mut values = Vec::new();
    for (p, part) in parts.iter().enumerate() {
        let mut batches: Vec<_> = part.manifest().batches.iter().collect();
        batches.sort_by_key(|b| b.first_point);
        for batch in batches {
            let path = part.layout.batch_file(&dataset, batch.index);
            let file = File::open(&path).map_err(|e| io(&path, e))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.build())
                .map_err(|e| io(&path, e))?;
            let mut order = batch.first_point;
            for rb in reader {
                let rb = rb.map_err(|e| io(&path, e))?;
                if params.is_empty() {
                    *params = rb
                        .schema()
                        .fields()
                        .iter()
                        .filter(|f| !OWN.contains(&f.name().as_str()))
                        .filter(|f| matches!(f.data_type(), DataType::Float64 | DataType::Int64))
                        .map(|f| f.name().clone())
                        .collect();
                }
                let floats =
                    |name: &str| -> Result<Option<arrow::array::Float64Array>, ReportError> {
                        match rb.column_by_name(name) {
                            None => Ok(None),
                            Some(c) => Ok(Some(
                                cast(c, &DataType::Float64)
                                    .map_err(|e| io(&path, e))?
                                    .as_primitive::<Float64Type>()
                                    .clone(),
                            )),
                        }
                    };
                let ids = rb
                    .column_by_name("param_id")
                    .map(|c| cast(c, &DataType::Utf8))
                    .transpose()
                    .map_err(|e| io(&path, e))?
                    .ok_or_else(|| io(&path, "no param_id column"))?;
                let ids = ids.as_string::<i32>();
                let loss = floats("loss")?.ok_or_else(|| io(&path, "no loss column"))?;
                let loss_se = floats("loss_se")?;
                let columns: Vec<Option<arrow::array::Float64Array>> =
                    params.iter().map(|n| floats(n)).collect::<Result<_, _>>()?;
                let uint = |name: &str| {
                    rb.column_by_name(name)
                        .and_then(|c| c.as_primitive_opt::<UInt32Type>().cloned())
                };
                let (n_rep, n_failed) = (uint("n_replicates"), uint("n_failed"));
                for row in 0..rb.num_rows() {
                    values.clear();
                    values.extend(columns.iter().map(|c| {
                        c.as_ref().filter(|c| !c.is_null(row)).map_or(f64::NAN, |c| c.value(row))
                    }));
                    let l = (!loss.is_null(row)).then(|| loss.value(row));
                    let se = loss_se.as_ref().and_then(|c| (!c.is_null(row)).then(|| c.value(row)));
                    visit(
                        ids.value(row),
                        &values,
                        l,
                        se,
                        n_rep.as_ref().map_or(0, |c| c.value(row)),
                        n_failed.as_ref().map_or(0, |c| c.value(row)),
                        order,
                        p,
                        batch.index,
                    );
                    order += 1;
                }
            }
        }
    }
    Ok(())
}

fn scan_target(parts: &[Part], target: &str, top: usize) -> Result<TargetScan, ReportError> {
    // Pass 1: the parameters' ranges and the counts.
    let mut params = Vec::new();
    let mut ranges: Vec<(f64, f64)> = Vec::new();
    let (mut rows, mut null, mut nan, mut infinite) = (0u64, 0u64, 0u64, 0u64);
    scan_rows(parts, target, &mut params, |_, values, loss, _, _, _, _, _, _| {
        if ranges.is_empty() {
            ranges = vec![(f64::INFINITY, f64::NEG_INFINITY); values.len()];
        }
        for (r, v) in ranges.iter_mut().zip(values) {
            if v.is_finite() {
                *r = (r.0.min(*v), r.1.max(*v));
            }
        }
        rows += 1;
        match loss {
            None => null += 1,
            Some(l) if l.is_nan() => nan += 1,
            Some(l) if l.is_infinite() => infinite += 1,
            _ => {}
        }
    })?;
    // Pass 2: best, subsample, profiles, maps.
    let threshold = data::scatter_threshold(rows, data::SCATTER_SETS);
    let varying: Vec<usize> =
        (0..params.len()).filter(|&i| ranges.get(i).is_some_and(|r| r.1 > r.0)).collect();
    let mut profiles: Vec<Profile> =
        ranges.iter().map(|r| Profile::new(r.0, r.1, data::PROFILE_BINS)).collect();
    let mut maps: Vec<((usize, usize), LossMap)> = Vec::new();
    for (a, &i) in varying.iter().enumerate() {
        for &j in &varying[a + 1..] {
            maps.push(((i, j), LossMap::new(ranges[i], ranges[j], data::MAP_CELLS)));
        }
    }
    let mut best = BestK::new(top);
    let mut scatter = Vec::new();
    let mut names = params.clone();
    scan_rows(parts, target, &mut names, |id, values, loss, se, n_rep, n_failed, order, p, b| {
        let Some(loss) = loss.filter(|l| l.is_finite()) else { return };
        for (profile, v) in profiles.iter_mut().zip(values) {
            profile.add(*v, loss);
        }
        for ((i, j), map) in &mut maps {
            map.add(values[*i], values[*j], loss);
        }
        if data::keep_in_scatter(id, threshold) {
            scatter.push((values.to_vec(), loss));
        }
        if best.would_keep(loss, order) {
            let row = BestRow {
                param_id: id.to_string(),
                params: values.to_vec(),
                loss_se: se,
                n_replicates: n_rep,
                n_failed,
                part: p,
                batch: b,
            };
            best.offer(loss, order, row);
        }
    })?;
    Ok(TargetScan { params, ranges, rows, null, nan, infinite, best, scatter, profiles, maps })
}

/// `(time, value)` of every replicate of each of `ids` in `output`'s committed files of
/// `part`, reading only the batches listed in `batches`.
fn replicate_values(
    part: &Part,
    output: &str,
    time_column: &str,
    column: &str,
    wanted: &HashMap<String, u32>,
) -> Result<HashMap<String, Vec<(f64, f64)>>, ReportError> {
    let dataset = Dataset::ModelOutput(output.to_string());
    let mut out: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    let mut batches: Vec<u32> = wanted.values().copied().collect();
    batches.sort_unstable();
    batches.dedup();
    for index in batches {
        let path = part.layout.batch_file(&dataset, index);
        if !path.is_file() {
            continue;
        }
        let file = File::open(&path).map_err(|e| io(&path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| io(&path, e))?;
        for rb in reader {
            let rb: RecordBatch = rb.map_err(|e| io(&path, e))?;
            let get = |name: &str, to: &DataType| {
                rb.column_by_name(name)
                    .ok_or_else(|| io(&path, format!("no column `{name}`")))
                    .and_then(|c| cast(c, to).map_err(|e| io(&path, e)))
            };
            let ids = get("param_id", &DataType::Utf8)?;
            let ids = ids.as_string::<i32>();
            let t = get(time_column, &DataType::Float64)?;
            let t = t.as_primitive::<Float64Type>();
            let v = get(column, &DataType::Float64)?;
            let v = v.as_primitive::<Float64Type>();
            for row in 0..rb.num_rows() {
                let id = ids.value(row);
                if wanted.contains_key(id) && !t.is_null(row) && !v.is_null(row) {
                    out.entry(id.to_string()).or_default().push((t.value(row), v.value(row)));
                }
            }
        }
    }
    Ok(out)
}

/// Writes `<dir>/report.html` (and the SVG files when asked); returns its path.
///
/// # Errors
/// [`ReportError::NotAnOutput`] when `dir` is not a simsweep output,
/// [`ReportError::NothingToPlot`] when it has no committed batch or a target has no loss at
/// all (nothing is written then); [`ReportError::Io`] naming a file that cannot be read or
/// written.
pub fn write_report(dir: &Path, options: &ReportOptions) -> Result<PathBuf, ReportError> {
    if options.top == 0 || options.top > MAX_TOP {
        return Err(ReportError::NotAnOutput {
            dir: dir.to_path_buf(),
            message: format!("--top {} is not 1 … {MAX_TOP}: give fewer best sets", options.top),
        });
    }
    let top = options.top;
    if let Some(svg_dir) = options.svg_dir.as_ref().filter(|d| d.exists() && !d.is_dir()) {
        return Err(ReportError::NotAnOutput {
            dir: svg_dir.clone(),
            message: "--svg-dir names a file; give a folder (created if missing)".into(),
        });
    }
    let parts = parts_of(dir)?;
    let nothing = |message: String| ReportError::NothingToPlot { dir: dir.to_path_buf(), message };
    let committed: usize = parts.iter().map(|p| p.manifest().batches.len()).sum();
    if parts.is_empty() || committed == 0 {
        return Err(nothing(
            "no batch committed yet: nothing to plot; run the job (or wait for its first batch) \
             and ask again"
                .into(),
        ));
    }
    let first = parts[0].manifest();
    let observations: Vec<TargetObservations> = first.observations.clone();
    let target_names: Vec<String> = if observations.is_empty() {
        simsweep_engine::output::SpecIdentity::target_names(&first.spec_parts)
    } else {
        observations.iter().map(|o| o.target.clone()).collect()
    };

    // The refine step, when there is a finished one (whole outputs only).
    let refine_dir = dir.join(simsweep_engine::spec::REFINE_DIR);
    let refine_parts =
        if refine_dir.join("manifest.json").is_file() { parts_of(&refine_dir).ok() } else { None };
    let refine_unfinished =
        refine_parts.as_ref().is_some_and(|r| !r.iter().all(|p| p.manifest().finished));
    let refined: Option<Vec<Part>> = refine_parts.filter(|_| !refine_unfinished);

    let mut svgs: Vec<(String, String)> = Vec::new();
    let mut body = String::new();
    if refine_unfinished {
        body.push_str(
            "<p class=\"note\">The refine step (refine/) has not finished: the tables and the fit \
             show sweep losses. Run the job again to finish it.</p>",
        );
    }
    let mut scans = Vec::new();
    for name in &target_names {
        let scan = scan_target(&parts, name, top)?;
        if scan.rows > 0 && scan.null == scan.rows {
            return Err(nothing(format!(
                "every loss of target `{name}` is null ({} parameter sets): every replicate \
                 failed (see failures/) or the model's output does not cover the observation \
                 times (see the run's warnings); fix that and run again",
                scan.rows
            )));
        }
        scans.push(scan);
    }

    for (name, scan) in target_names.iter().zip(&scans) {
        let obs = observations.iter().find(|o| &o.target == name);
        let refined_scan = match &refined {
            Some(r) => Some(scan_target(r, name, top)?),
            None => None,
        };
        let _ = write!(
            body,
            "<section class=\"target\" id=\"target-{name}\"><h2>Target <code>{name}</code></h2>"
        );
        if let Some(o) = obs {
            let _ = write!(
                body,
                "<p class=\"what\">{} of model output <code>{}</code> column <code>{}</code> \
                 against {} observations; loss <code>{}</code>, aggregation <code>{}</code>, \
                 reporting fraction {}.</p>",
                if o.aggregation == "likelihood" { "Negative log-likelihood" } else { "Loss" },
                html(&o.output),
                html(&o.column),
                o.observed.len(),
                html(&o.loss),
                html(&o.aggregation),
                html(&o.reporting_fraction)
            );
        }
        // The best sets shown: refined when there are refined ones.
        let (shown, shown_from, shown_part) = match (&refined_scan, &refined) {
            (Some(rs), Some(r)) if !rs.best.items.is_empty() => (rs, "refined", Some(r)),
            _ => (scan, "sweep", None),
        };
        // Fit.
        let fit = match obs {
            None => None,
            Some(o) => {
                let source_parts: &[Part] = shown_part.map_or(&parts, |r| r.as_slice());
                let mut by_part: BTreeMap<usize, HashMap<String, u32>> = BTreeMap::new();
                for (_, _, row) in &shown.best.items {
                    by_part.entry(row.part).or_default().insert(row.param_id.clone(), row.batch);
                }
                let mut values: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
                for (p, wanted) in &by_part {
                    values.extend(replicate_values(
                        &source_parts[*p],
                        &o.output,
                        &o.time_column,
                        &o.column,
                        wanted,
                    )?);
                }
                // Each set's values times its reporting fraction ρ: the expected observation.
                let rho_at = shown.params.iter().position(|p| *p == o.reporting_fraction);
                let fixed_rho = o.reporting_fraction.parse::<f64>().unwrap_or(1.0);
                let bands: Vec<(String, data::Band)> = shown
                    .best
                    .items
                    .iter()
                    .filter_map(|(_, _, row)| {
                        let rho = rho_at.map_or(fixed_rho, |i| row.params[i]);
                        values.get(&row.param_id).map(|v| {
                            let scaled: Vec<(f64, f64)> =
                                v.iter().map(|(t, x)| (*t, rho * x)).collect();
                            (row.param_id.clone(), data::Band::of(&scaled))
                        })
                    })
                    .collect();
                Some((o, bands))
            }
        };
        let _ = write!(
            body,
            "<h3>Fit: observations against the best parameter sets ({shown_from} losses)</h3>"
        );
        match &fit {
            Some((o, bands)) if !bands.is_empty() => {
                let svg = plots::fit(name, o, bands);
                let _ = write!(
                    body,
                    "<figure class=\"plot\" data-plot=\"fit\" data-target=\"{name}\">{svg}<figcaption>Points: the \
                     observations. Blue: the best set's replicates, median (line), 50% and 95% \
                     envelopes (bands) over its {} replicates; grey lines: the medians of the next \
                     {} best. Model values times each set's reporting fraction ρ (the expected \
                     observation, without the floor).</figcaption></figure>",
                    bands[0].1.replicates,
                    bands.len() - 1
                );
                svgs.push((format!("{name}-fit.svg"), svg));
            }
            Some((o, _)) => {
                let _ = write!(
                    body,
                    "<p class=\"note\">The model output <code>{}</code> of the best sets is not in this \
                     output (not among the job's <code>model_outputs</code>): no fit plot.</p>",
                    html(&o.output)
                );
            }
            None => {
                let _ = write!(
                    body,
                    "<p class=\"note\">This output does not record the observations (written by an \
                     older simsweep): no fit plot.</p>"
                );
            }
        }
        // Best table.
        let _ = write!(body, "<h3>Best parameter sets ({shown_from} losses)</h3>");
        body.push_str(&best_table(shown, refined_scan.is_some().then_some(scan)));
        let non_finite = scan.infinite + scan.nan + scan.null;
        let _ = write!(
            body,
            "<p class=\"counts\">{} parameter sets scored; {} with a finite loss; {} infinite \
             (the data impossible under every replicate: a zero prediction where cases were \
             observed, with no floor), {} NaN, {} null (no replicate succeeded, or the output \
             does not cover the observations).</p>",
            scan.rows,
            scan.rows - non_finite,
            scan.infinite,
            scan.nan,
            scan.null
        );
        // Loss landscape.
        let best_points: Vec<(Vec<f64>, f64)> =
            scan.best.items.iter().map(|(l, _, r)| (r.params.clone(), *l)).collect();
        let _ = write!(
            body,
            "<h3>Loss against each parameter (sweep losses)</h3><p class=\"what\">Dots: {} of {} \
             sets (a uniform subsample by param_id hash when there are more than {}); red: the \
             {} best; line: the lowest loss per bin of the parameter (a profile). The loss axis \
             stops at the median loss of the dots (higher ones are off the top).</p><div class=\"grid\">",
            scan.scatter.len(),
            scan.rows,
            data::SCATTER_SETS,
            best_points.len()
        );
        for (i, param) in scan.params.iter().enumerate() {
            if scan.ranges[i].1 <= scan.ranges[i].0 {
                continue;
            }
            let svg = plots::landscape(param, i, &scan.scatter, &best_points, &scan.profiles[i]);
            let _ = write!(
                body,
                "<figure class=\"plot\" data-plot=\"landscape\" data-parameter=\"{param}\">{svg}</figure>"
            );
            svgs.push((format!("{name}-loss-{param}.svg"), svg));
        }
        body.push_str("</div>");
        if !scan.maps.is_empty() {
            let _ = write!(
                body,
                "<h3>Pairwise loss maps (sweep losses)</h3><p class=\"what\">Each cell: the lowest \
                 loss of the sets in it (dark: low); white: no set; crosses: the best sets.</p>\
                 <div class=\"grid\">"
            );
            for ((i, j), map) in &scan.maps {
                let svg =
                    plots::loss_map(&scan.params[*i], &scan.params[*j], map, &best_points, *i, *j);
                let _ = write!(body, "<figure class=\"plot\" data-plot=\"map\">{svg}</figure>");
                svgs.push((format!("{name}-map-{}-{}.svg", scan.params[*i], scan.params[*j]), svg));
            }
            body.push_str("</div>");
        }
        body.push_str("</section>");
    }

    // The job.
    let job = job_section(dir, &parts, refined.as_deref(), &mut svgs)?;
    let html = page(&first.job_name, dir, &parts, &job, &body);

    // Write: the SVG files, then the report atomically.
    if let Some(svg_dir) = &options.svg_dir {
        std::fs::create_dir_all(svg_dir).map_err(|e| io(svg_dir, e))?;
        for (file, svg) in &svgs {
            let path = svg_dir.join(file);
            std::fs::write(&path, svg).map_err(|e| io(&path, e))?;
        }
    }
    let path = dir.join("report.html");
    let tmp = dir.join(".report.html.tmp");
    std::fs::write(&tmp, html).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    Ok(path)
}

fn best_table(scan: &TargetScan, sweep: Option<&TargetScan>) -> String {
    let mut t =
        String::from("<table class=\"best\"><thead><tr><th>rank</th><th>loss</th><th>± se</th>");
    if sweep.is_some() {
        t.push_str("<th>sweep loss</th>");
    }
    for p in &scan.params {
        let _ = write!(t, "<th>{}</th>", html(p));
    }
    t.push_str("<th>n_ok</th><th>n_failed</th><th>param_id</th></tr></thead><tbody>");
    for (rank, (loss, _, row)) in scan.best.items.iter().enumerate() {
        let se = row.loss_se.map_or("—".to_string(), |s| format!("{s:.3}"));
        let _ = write!(t, "<tr><td>{}</td><td>{loss:.4}</td><td>{se}</td>", rank + 1);
        if let Some(sweep) = sweep {
            let l = sweep
                .best
                .items
                .iter()
                .find(|(_, _, r)| r.param_id == row.param_id)
                .map_or("—".to_string(), |(l, _, _)| format!("{l:.4}"));
            let _ = write!(t, "<td>{l}</td>");
        }
        for v in &row.params {
            let _ = write!(t, "<td>{}</td>", fmt_num(*v));
        }
        let _ = write!(
            t,
            "<td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            row.n_replicates.saturating_sub(row.n_failed),
            row.n_failed,
            html(&row.param_id[..12.min(row.param_id.len())])
        );
    }
    t.push_str("</tbody></table>");
    t
}

fn job_section(
    dir: &Path,
    parts: &[Part],
    refined: Option<&[Part]>,
    svgs: &mut Vec<(String, String)>,
) -> Result<String, ReportError> {
    let first = parts[0].manifest();
    let committed: u64 = parts.iter().map(|p| p.status.simulations_committed).sum();
    let planned: u64 = parts.iter().map(|p| p.manifest().simulations_planned).sum();
    let failed: u64 = parts.iter().map(|p| p.status.failed).sum();
    let batches: usize = parts.iter().map(|p| p.manifest().batches.len()).sum();
    let batches_planned: u64 = parts.iter().map(|p| u64::from(p.manifest().batches_planned)).sum();
    let finished = parts.iter().all(|p| p.manifest().finished);
    let mut s = String::from("<section class=\"job\"><h2>Job</h2><table class=\"facts\">");
    let mut row = |k: &str, v: String| {
        let _ = write!(s, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    row("job", html(&first.job_name));
    row("output", html(&dir.display().to_string()));
    row(
        "state",
        if finished { "finished".into() } else { "not finished (committed batches only)".into() },
    );
    row("spec hash", format!("<code>{}</code>", html(&first.spec_hash)));
    row(
        "engine",
        format!(
            "simsweep {} (manifest format {})",
            html(&first.engine_version),
            first.format_version
        ),
    );
    row("parameter sets", format!("{} × {} replicates", first.n_parameter_sets, first.replicates));
    row("batch size", format!("{} parameter sets", first.batch_size));
    if let Some(w) = first.workers {
        row("workers", format!("{w} (of the latest run)"));
    }
    let mut seconds: Vec<f64> =
        parts.iter().flat_map(|p| p.manifest().batches.iter().map(|b| b.seconds)).collect();
    if !seconds.is_empty() {
        seconds.sort_by(f64::total_cmp);
        row(
            "batch time",
            format!(
                "median {:.2} s, slowest {:.2} s (release to commit)",
                data::quantile(&seconds, 0.5),
                seconds[seconds.len() - 1]
            ),
        );
    }
    if parts.len() > 1 || first.shard.is_some() {
        row("shards", format!("{} folders", parts.len()));
    }
    row("batches", format!("{batches} of {batches_planned} committed"));
    row(
        "simulations",
        format!(
            "{committed} of {planned} committed ({:.1}%), {failed} failed",
            100.0 * committed as f64 / planned.max(1) as f64
        ),
    );
    row("created", html(&first.created_at));
    row("last update", html(&first.updated_at));
    for (k, v) in &first.peak_in_flight {
        row(&format!("peak {}", html(k)), v.to_string());
    }
    for (k, v) in &first.spec_parts {
        row(&format!("spec: {}", html(k)), format!("<code>{}</code>", html(v)));
    }
    if let Some(r) = refined {
        let m = r[0].manifest();
        row(
            "refine step",
            format!(
                "{} parameter sets × {} replicates, in refine/",
                m.n_parameter_sets, m.replicates
            ),
        );
    }
    s.push_str("</table>");
    // Throughput over the run.
    let mut commits: Vec<(f64, u64)> = Vec::new();
    for p in parts {
        for b in &p.manifest().batches {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&b.committed_at) {
                commits.push((t.timestamp_millis() as f64 / 1000.0, b.simulations));
            }
        }
    }
    commits.sort_by(|a, b| a.0.total_cmp(&b.0));
    if commits.len() >= 2 {
        let t0 = commits[0].0;
        let mut total = 0u64;
        let series: Vec<(f64, f64)> = commits
            .iter()
            .map(|(t, n)| {
                total += n;
                ((t - t0) / 60.0, total as f64)
            })
            .collect();
        let svg = plots::throughput(&series);
        let _ = write!(
            s,
            "<h3>Throughput</h3><figure class=\"plot\" data-plot=\"throughput\">{svg}<figcaption>\
             Simulations committed against minutes since the first commit (of every run of this \
             output).</figcaption></figure>"
        );
        svgs.push(("throughput.svg".to_string(), svg));
    }
    // Failures by kind.
    let mut kinds: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for p in parts {
        let found = simsweep_engine::summary::failures_by_kind(&p.layout, p.manifest())
            .map_err(|e| io(&p.layout.root().join("failures"), e))?;
        for k in found {
            let e = kinds.entry(k.kind).or_insert((0, k.first_message));
            e.0 += k.count;
        }
    }
    s.push_str("<h3>Failures</h3>");
    if kinds.is_empty() {
        s.push_str("<p>No simulation failed.</p>");
    } else {
        s.push_str("<table class=\"failures\"><thead><tr><th>kind</th><th>attempts</th><th>first message</th></tr></thead><tbody>");
        for (kind, (count, message)) in &kinds {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{count}</td><td><pre>{}</pre></td></tr>",
                html(kind),
                html(message)
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section>");
    Ok(s)
}

fn page(job: &str, dir: &Path, parts: &[Part], job_html: &str, body: &str) -> String {
    let generated = simsweep_engine::output::utc_now_rfc3339();
    let finished = parts.iter().all(|p| p.manifest().finished);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>simsweep report: {title}</title><style>{CSS}</style></head><body>\
         <header><h1>simsweep report: {title}</h1><p>{state} · {dir} · generated {generated} by \
         simsweep {version}</p></header><main>{body}{job_html}</main></body></html>\n",
        title = html(job),
        state = if finished { "finished" } else { "partial: committed batches only" },
        dir = html(&dir.display().to_string()),
        version = env!("CARGO_PKG_VERSION"),
    )
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1b1b1f;background:#fff}\
header{background:#1f3a5f;color:#fff;padding:1rem 2rem}header h1{margin:0;font-size:1.4rem}\
header p{margin:.3rem 0 0;opacity:.85;font-size:.9rem}main{padding:1rem 2rem;max-width:1400px}\
section{margin-bottom:2.5rem}h2{border-bottom:2px solid #1f3a5f;padding-bottom:.2rem}\
h3{margin-top:1.5rem;font-size:1.05rem}.what,.note,.counts{color:#444;font-size:.9rem;max-width:70rem}\
.note{background:#fff6e0;padding:.4rem .6rem}figure{margin:0}figcaption{font-size:.8rem;color:#555;max-width:60rem}\
.grid{display:flex;flex-wrap:wrap;gap:.5rem}table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}\
th,td{border:1px solid #ccd;padding:.2rem .5rem;text-align:right}th{background:#eef1f6}\
table.facts th{text-align:left}table.facts td{text-align:left}td pre{margin:0;white-space:pre-wrap;text-align:left}\
code{font-size:.85em}svg{max-width:100%;height:auto}";

fn html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "—".to_string()
    } else if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) {
        format!("{v:.4e}")
    } else {
        format!("{v:.5}")
    }
}
