//! `GET /v1/credits/prices`: what each route costs, so a client can say
//! "4 credits per image" before the user acts (docs/usage-api.md). Every
//! configured route in config order, cost-0 ones included; nothing about
//! upstreams (names, URLs, injected headers).

use serde_json::{json, Value};

use crate::config::{Config, SettleSource};

pub fn prices_json(config: &Config) -> Value {
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|route| {
            json!({
                "route": route.name,
                "method": route.method.as_ref().map(|m| m.as_str()),
                "path": route.path.as_config(),
                "cost": route.cost,
                "units": route.units.as_ref().map(|units| json!({
                    "json": units.pointer,
                    "per": units.per,
                    "default": units.default.map(number),
                    "max": units.max.map(number),
                })),
                "settle": route.settle.as_ref().map(|settle| {
                    let mut rule = match &settle.source {
                        SettleSource::Json(pointer) => json!({"json": pointer}),
                        SettleSource::Header(name) => json!({"header": name}),
                    };
                    rule["per"] = settle.per.into();
                    // Most credits a settlement may charge; null: the reservation.
                    rule["max"] = settle.max_credits.into();
                    rule
                }),
            })
        })
        .collect();
    json!({ "routes": routes })
}

/// `GET /admin/v1/prices`: the same price list, with what the operator
/// console also needs — the configured plans (for a plan change) and the
/// window length.
pub fn admin_prices_json(config: &Config) -> Value {
    let mut body = prices_json(config);
    body["plans"] = config
        .plans
        .iter()
        .map(|(plan, allowance)| json!({"plan": plan, "monthly_allowance": allowance}))
        .collect::<Vec<_>>()
        .into();
    body["window_seconds"] = config.ledger.window.as_secs().into();
    body
}

/// Whole numbers as JSON integers (`1`, not `1.0`).
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_list_every_route_in_order_and_no_upstream() {
        let toml = r#"
[upstreams.images]
url = "https://images.vendor.example"
headers = { Authorization = "Bearer secret-vendor-key" }
[upstreams.agents]
url = "https://agents.vendor.example"

[[routes]]
name = "image-generate"
method = "post"
path = "/v1/images/generate"
upstream = "images"
cost = 4
units = { json = "/n", default = 1, max = 10 }

[[routes]]
name = "agents"
path = "/v1/agents/*"
upstream = "agents"
cost = 1
units = { json = "/max_tokens", default = 1000, max = 32000, per = 1000 }
settle = { json = "/usage/total_tokens", per = 1000 }

[[routes]]
name = "status"
method = "GET"
path = "/v1/status"
upstream = "images"
cost = 0
"#;
        let config =
            Config::parse(toml, "test.toml", std::path::Path::new("."), &|_| None).unwrap();
        let body = prices_json(&config);
        assert_eq!(
            body["routes"][0],
            json!({"route":"image-generate","method":"POST","path":"/v1/images/generate","cost":4,
                   "units":{"json":"/n","per":1,"default":1,"max":10},"settle":null})
        );
        assert_eq!(
            body["routes"][1],
            json!({"route":"agents","method":null,"path":"/v1/agents/*","cost":1,
                   "units":{"json":"/max_tokens","per":1000,"default":1000,"max":32000},
                   "settle":{"json":"/usage/total_tokens","per":1000,"max":null}})
        );
        assert_eq!(body["routes"][2]["cost"], 0);
        assert_eq!(body["routes"].as_array().unwrap().len(), 3);
        let text = body.to_string();
        for secret in [
            "vendor.example",
            "secret-vendor-key",
            "upstream",
            "images\"",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
}
