//! The ledger's numeric range (docs/ledger.md, "Bounds and repair").
//!
//! Redis runs the ledger's arithmetic in Lua, whose numbers are doubles:
//! integers are exact only up to 2^53. Every cost, allowance, settled cost
//! and running total the ledger holds is at most [`MAX_CREDITS`] (10^15), so
//! any sum the scripts make — a total plus a cost — stays below 2^53 and is
//! exact. A value beyond it is refused before anything is written, by both
//! backends alike; the configuration refuses such numbers at load.

use super::{LedgerError, PlanTable};

/// The largest cost, allowance or total the ledger holds: 10^15 credits.
/// `lua/prelude.lua` carries the same number (a unit test pins them together).
pub const MAX_CREDITS: u64 = 1_000_000_000_000_000;

/// Refuses a plan table with an allowance the ledger cannot hold. The
/// configuration never produces one; this keeps the ledger exact whatever
/// its caller.
pub fn check_plans(plans: &PlanTable) -> Result<(), LedgerError> {
    match plans
        .iter()
        .find(|(_, allowance)| **allowance > MAX_CREDITS)
    {
        Some((plan, allowance)) => Err(LedgerError::OutOfRange(format!(
            "plan `{plan}` has an allowance of {allowance} credits, above {MAX_CREDITS}"
        ))),
        None => Ok(()),
    }
}

/// Refuses a settled cost the ledger cannot hold.
pub fn check_settled_cost(cost: u64) -> Result<(), LedgerError> {
    if cost > MAX_CREDITS {
        return Err(LedgerError::OutOfRange(format!(
            "a settled cost of {cost} credits is above {MAX_CREDITS}"
        )));
    }
    Ok(())
}

/// Refuses a grant the ledger cannot hold (zero credits is no grant).
pub fn check_grant(credits: u64) -> Result<(), LedgerError> {
    if credits == 0 || credits > MAX_CREDITS {
        return Err(LedgerError::OutOfRange(format!(
            "a grant of {credits} credits is not within 1..={MAX_CREDITS}"
        )));
    }
    Ok(())
}

/// Live grants that a new grant would take past [`MAX_CREDITS`].
pub fn grants_too_large(account: &str, total: &str) -> LedgerError {
    LedgerError::OutOfRange(format!(
        "account `{account}`'s live grants would hold {total} credits, above {MAX_CREDITS}; nothing was written"
    ))
}

/// An account total that an operation would take past [`MAX_CREDITS`].
pub fn total_too_large(account: &str, total: &str) -> LedgerError {
    LedgerError::OutOfRange(format!(
        "account `{account}` would hold {total} credits, above {MAX_CREDITS}; nothing was written"
    ))
}

/// An account whose stored totals cannot be trusted (written by an older
/// build, or by hand): reads and debits refuse it until it is recounted.
pub fn damaged(account: &str, field: &str) -> LedgerError {
    LedgerError::Inconsistent(format!(
        "account `{account}`: the stored `{field}` is not a valid total; \
         repair it with POST /admin/v1/accounts/{account}/recount"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sum_of_two_bounded_values_is_exact_in_a_double() {
        let largest_sum = 2 * MAX_CREDITS;
        assert!(largest_sum < 1 << 53);
        assert_eq!(largest_sum as f64 as u64, largest_sum);
    }

    #[test]
    fn allowances_and_settled_costs_above_the_bound_are_refused() {
        let mut plans = PlanTable::new();
        plans.insert("pro".into(), MAX_CREDITS);
        assert!(check_plans(&plans).is_ok());
        plans.insert("huge".into(), MAX_CREDITS + 1);
        assert!(matches!(
            check_plans(&plans),
            Err(LedgerError::OutOfRange(message)) if message.contains("`huge`")
        ));
        assert!(check_settled_cost(MAX_CREDITS).is_ok());
        assert!(check_settled_cost(MAX_CREDITS + 1).is_err());
    }
}
