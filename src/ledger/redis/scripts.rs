//! The ledger's Lua scripts (`lua/`), built once per ledger. Scripts that
//! touch the window share `lua/prelude.lua` (the clock, the record, the
//! window's bookkeeping and the bounds); docs/ledger.md describes each.

use redis::Script;

const PRELUDE: &str = include_str!("lua/prelude.lua");

pub(super) struct Scripts {
    pub debit: Script,
    pub balance: Script,
    pub refund: Script,
    pub settle: Script,
    pub recount: Script,
    pub history: Script,
    pub put_account: Script,
    pub usage: Script,
    pub alerts: Script,
    pub grants: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            debit: with_prelude(include_str!("lua/debit.lua")),
            balance: with_prelude(include_str!("lua/balance.lua")),
            refund: with_prelude(include_str!("lua/refund.lua")),
            settle: with_prelude(include_str!("lua/settle.lua")),
            recount: with_prelude(include_str!("lua/recount.lua")),
            history: Script::new(include_str!("lua/history.lua")),
            put_account: Script::new(include_str!("lua/put_account.lua")),
            usage: with_prelude(include_str!("lua/usage.lua")),
            alerts: Script::new(include_str!("lua/alerts.lua")),
            grants: with_prelude(include_str!("lua/grants.lua")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PRELUDE;
    use crate::ledger::bounds::MAX_CREDITS;

    #[test]
    fn the_scripts_enforce_the_same_bound_as_the_gateway() {
        let line = format!("local MAX_CREDITS = {MAX_CREDITS}\n");
        assert!(PRELUDE.contains(&line), "prelude.lua must define {line:?}");
    }
}
