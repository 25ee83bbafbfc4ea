//! `noop`: a model that does (almost) nothing, for measuring the engine's own cost.
//!
//! Hidden from the documentation: it exists for the benchmarks (`benches/`) and tests, which
//! need a model whose cost is negligible next to the engine's. It returns one output,
//! `signal(day Int64, value Float64)`, with `rows` rows: `day = 0 … rows − 1` and
//! `value = a + b · day / rows + (seed mod 7)`, so replicates differ, losses are finite and
//! every value is positive (Poisson and negative-binomial targets work). The `day` column is
//! built once and shared by every replicate.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::{ModelSettingError, OutputSpec, SimError, SimOutput, Simulator};
use crate::params::ParameterSet;

const NAME: &str = "noop";
/// Default rows of the `signal` output.
pub const DEFAULT_NOOP_ROWS: u32 = 100;

/// Settings of the `noop` model.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoopSettings {
    /// Rows of the `signal` output per replicate (≥ 1).
    #[serde(default = "default_rows")]
    pub rows: u32,
}

fn default_rows() -> u32 {
    DEFAULT_NOOP_ROWS
}

impl Default for NoopSettings {
    fn default() -> Self {
        NoopSettings { rows: DEFAULT_NOOP_ROWS }
    }
}

/// The no-op model (see the module documentation). Parameters `a` and `b` (numbers).
#[derive(Debug, Clone)]
pub struct NoopModel {
    schema: SchemaRef,
    day: ArrayRef,
    rows: u32,
}

impl NoopModel {
    /// A no-op model returning `settings.rows` rows per replicate.
    ///
    /// # Errors
    /// `rows` is 0.
    pub fn new(settings: NoopSettings) -> Result<Self, ModelSettingError> {
        if settings.rows == 0 {
            return Err(ModelSettingError {
                setting: "rows",
                message: "must be at least 1".into(),
            });
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("day", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ]));
        let day = Arc::new(Int64Array::from_iter_values(0..i64::from(settings.rows)));
        Ok(NoopModel { schema, day, rows: settings.rows })
    }
}

impl Simulator for NoopModel {
    fn name(&self) -> &str {
        NAME
    }

    fn parameter_names(&self) -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec { name: "signal".into(), schema: self.schema.clone() }]
    }

    fn simulate(&self, params: &ParameterSet, seed: u32) -> Result<SimOutput, SimError> {
        let get = |name: &str| {
            params.get_f64(name).ok_or_else(|| {
                SimError::Model(format!("parameter `{name}` is missing or not a number"))
            })
        };
        let (a, b) = (get("a")?, get("b")?);
        let offset = f64::from(seed % 7);
        let rows = f64::from(self.rows);
        let value = Float64Array::from_iter_values(
            (0..self.rows).map(|d| a + b * f64::from(d) / rows + offset),
        );
        let table =
            RecordBatch::try_new(self.schema.clone(), vec![self.day.clone(), Arc::new(value)])
                .map_err(|e| SimError::Model(e.to_string()))?;
        Ok(SimOutput { tables: vec![table] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamValue;

    #[test]
    fn returns_rows_deterministically() {
        let model = NoopModel::new(NoopSettings { rows: 5 }).unwrap();
        let mut params = ParameterSet::new();
        params.insert("a", ParamValue::Float(1.0));
        params.insert("b", ParamValue::Float(5.0));
        let out = model.simulate(&params, 9).unwrap();
        let t = &out.tables[0];
        assert_eq!(t.num_rows(), 5);
        let v = t.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(v.values().to_vec(), vec![3.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(model.simulate(&params, 9).unwrap().tables[0], *t);
        assert!(NoopModel::new(NoopSettings { rows: 0 }).is_err());
    }
}
