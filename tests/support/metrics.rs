//! The gateway's `/metrics` text, parsed into samples a test can compare.

use std::collections::BTreeMap;

pub struct Samples {
    samples: BTreeMap<String, f64>,
    text: String,
}

impl Samples {
    pub fn parse(text: &str) -> Samples {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (name, value) = line
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("not `name value`: {line}"));
                let value: f64 = value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad sample {line}"));
                (name.to_owned(), value)
            })
            .collect();
        Samples {
            samples,
            text: text.to_owned(),
        }
    }

    /// The sample's value; panics (showing every sample) when it is absent.
    pub fn get(&self, name: &str) -> f64 {
        self.value(name)
            .unwrap_or_else(|| panic!("no {name} in\n{}", self.text))
    }

    /// The sample's value; a counter never incremented is absent: 0.
    pub fn counter(&self, name: &str) -> f64 {
        self.value(name).unwrap_or(0.0)
    }

    pub fn value(&self, name: &str) -> Option<f64> {
        self.samples.get(name).copied()
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}
