//! What goes over the wire to the scripts and comes back: the packed debit
//! record (a window member), request ids in their two encodings, and the
//! decoding of every script's reply. Reply layouts are written once here, as
//! named positions, beside the script that produces them (`lua/*.lua`);
//! docs/ledger.md describes the record.

use std::collections::HashMap;

use redis::Value;

use crate::ledger::LedgerError;

// ---------------------------------------------------------------------------
// The debit record (see `lua/prelude.lua`): the flags byte, then the id —
// 16 lower-case hex digits packed into 8 bytes (the gateway's own ids), or
// any other id as a varint length and its bytes — then varint cost and
// varint route number.

/// Flag: the id is packed (8 bytes) rather than length-prefixed text.
const PACKED: u8 = 2;
/// Flag: the debit was refunded (it no longer counts; history keeps it).
const REFUNDED: u8 = 1;
/// Flag: grants paid part of the debit; the split follows the route,
/// unless the flags byte is 8 or more: then grant `flags / 8` paid it all.
const SPLIT: u8 = 4;
/// Bytes of a packed id after the flags byte.
const PACKED_ID_LEN: usize = 8;

/// The packed form (flags byte + 8 bytes), when `request_id` is 16
/// lower-case hex digits.
pub(super) fn packed_id(request_id: &str) -> Option<Vec<u8>> {
    let bytes = request_id.as_bytes();
    if bytes.len() != 2 * PACKED_ID_LEN
        || !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut encoded = Vec::with_capacity(1 + PACKED_ID_LEN);
    encoded.push(PACKED);
    for pair in bytes.chunks(2) {
        encoded.push(crate::hex::digit(pair[0])? << 4 | crate::hex::digit(pair[1])?);
    }
    Some(encoded)
}

/// The text form (flags byte + varint length + bytes), whatever the id looks like.
pub(super) fn text_id(request_id: &str) -> Vec<u8> {
    let bytes = request_id.as_bytes();
    let mut encoded = Vec::with_capacity(bytes.len() + 3);
    encoded.push(0);
    push_varint(&mut encoded, bytes.len() as u64);
    encoded.extend_from_slice(bytes);
    encoded
}

/// The id in the form a debit under it is recorded in: packed when it can be.
pub(super) fn encoded_id(request_id: &str) -> Vec<u8> {
    packed_id(request_id).unwrap_or_else(|| text_id(request_id))
}

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let low = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 128);
    }
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        n |= u64::from(byte & 127).checked_shl(shift)?;
        if byte < 128 {
            return Some(n);
        }
    }
    None
}

/// One debit record (a window member), decoded.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DebitRecord {
    pub request_id: String,
    pub refunded: bool,
    pub cost: u64,
    /// The route's number in the account hash (`n:<number>` → name).
    pub route: u64,
    /// What the allowance paid of `cost` (the rest came from grants).
    pub from_allowance: u64,
}

impl DebitRecord {
    pub(super) fn parse(member: &[u8]) -> Option<DebitRecord> {
        let flags = *member.first()?;
        let (request_id, mut pos) = if flags & PACKED != 0 {
            let end = 1 + PACKED_ID_LEN;
            (crate::hex::encode(member.get(1..end)?), end)
        } else {
            let mut pos = 1;
            let len = usize::try_from(read_varint(member, &mut pos)?).ok()?;
            let id = std::str::from_utf8(member.get(pos..pos.checked_add(len)?)?).ok()?;
            (id.to_owned(), pos + len)
        };
        let cost = read_varint(member, &mut pos)?;
        let route = read_varint(member, &mut pos)?;
        let from_allowance = if flags >= 8 {
            0
        } else if flags & SPLIT != 0 {
            read_varint(member, &mut pos)?.min(cost)
        } else {
            cost
        };
        Some(DebitRecord {
            request_id,
            refunded: flags & REFUNDED != 0,
            cost,
            route,
            from_allowance,
        })
    }
}

// ---------------------------------------------------------------------------
// `debit.lua`: one text line per debit, `<status> <fields separated by spaces>`.

/// Under which id an admitted debit was recorded (the `A` line's fourth field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecordedAs {
    RequestId,
    Fallback,
}

/// The window fields an `A` or `R` line carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WindowFields {
    /// The plan's position in the table the call sent, from 1.
    pub plan_number: usize,
    pub used: u64,
    /// -1 when nothing is in the window.
    pub next_release_in_ms: i64,
    /// Credits left in live grants.
    pub grants: u64,
    /// Per extra window of the plan, in config order: used, and the next
    /// release in ms (-1 when nothing is in it).
    pub limits: Vec<(u64, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DebitLine {
    /// `A <plan number> <used> <next release in ms> <1|2: id or fallback> <now>
    /// <grants left> <paid from grants> (<used> <next release in ms>)*`
    Admitted {
        window: WindowFields,
        recorded_as: RecordedAs,
        now_ms: i64,
        from_grants: u64,
    },
    /// `R <plan number> <used> <next release in ms> <retry after ms or -1> <now>
    /// <grants left> <refusing window: 0 or i> (<used> <next release in ms>)*`
    Rejected {
        window: WindowFields,
        retry_after_ms: Option<u64>,
        now_ms: i64,
        /// 0: the 30-day window; i: the plan's i-th extra window.
        refused_by: usize,
    },
    /// `N`
    NoAccount,
    /// `S`
    Suspended,
    /// `U <plan name>`
    UnknownPlan(String),
    /// `X <now>`: past its deadline, nothing recorded.
    PastDeadline { now_ms: i64 },
    /// `D <field>`: the account's stored totals cannot be trusted.
    Damaged { field: String },
    /// `E <message>`: a Redis error on this debit alone.
    Failed(String),
}

impl DebitLine {
    pub(super) fn parse(line: &str) -> Result<DebitLine, LedgerError> {
        let bad = || LedgerError::Protocol(format!("debit replied {line:?}"));
        let (status, rest) = line.split_once(' ').unwrap_or((line, ""));
        match status {
            "N" => return Ok(DebitLine::NoAccount),
            "S" => return Ok(DebitLine::Suspended),
            "U" => return Ok(DebitLine::UnknownPlan(rest.to_owned())),
            "E" => return Ok(DebitLine::Failed(rest.to_owned())),
            "D" => {
                return Ok(DebitLine::Damaged {
                    field: rest.to_owned(),
                })
            }
            "X" => {
                return Ok(DebitLine::PastDeadline {
                    now_ms: rest.parse().map_err(|_| bad())?,
                })
            }
            "A" | "R" => {}
            _ => return Err(bad()),
        }
        let mut fields = rest.split(' ').map(|field| field.parse::<i64>());
        let mut next = || fields.next().and_then(Result::ok).ok_or_else(bad);
        let plan_number = usize::try_from(next()?).map_err(|_| bad())?;
        let used = u64::try_from(next()?).map_err(|_| bad())?;
        let next_release_in_ms = next()?;
        let extra = next()?;
        let now_ms = next()?;
        let grants = u64::try_from(next()?).map_err(|_| bad())?;
        let extra2 = u64::try_from(next()?).map_err(|_| bad())?;
        let mut limits = Vec::new();
        while let Some(used) = fields.next() {
            let used = used
                .ok()
                .and_then(|u| u64::try_from(u).ok())
                .ok_or_else(bad)?;
            let next_release = fields.next().and_then(Result::ok).ok_or_else(bad)?;
            limits.push((used, next_release));
        }
        let window = WindowFields {
            plan_number,
            used,
            next_release_in_ms,
            grants,
            limits,
        };
        Ok(if status == "A" {
            DebitLine::Admitted {
                window,
                recorded_as: match extra {
                    1 => RecordedAs::RequestId,
                    2 => RecordedAs::Fallback,
                    _ => return Err(bad()),
                },
                now_ms,
                from_grants: extra2,
            }
        } else {
            DebitLine::Rejected {
                window,
                retry_after_ms: u64::try_from(extra).ok(),
                now_ms,
                refused_by: usize::try_from(extra2).map_err(|_| bad())?,
            }
        })
    }

    /// The Redis clock when the script ran, when the line carries it.
    pub(super) fn now_ms(&self) -> Option<i64> {
        match self {
            DebitLine::Admitted { now_ms, .. }
            | DebitLine::Rejected { now_ms, .. }
            | DebitLine::PastDeadline { now_ms } => Some(*now_ms),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Array replies.

/// `balance.lua`: `{}` (no account), `{'damaged', field}`, or the six fields
/// at these positions.
mod balance_at {
    pub const PLAN: usize = 0;
    pub const SUSPENDED: usize = 1;
    pub const USED: usize = 2;
    pub const NOW: usize = 3;
    /// Unix ms at which the oldest counting debit leaves; -1 when none.
    pub const RELEASE_AT: usize = 4;
    pub const RELEASE_CREDITS: usize = 5;
    /// Credits left in live grants.
    pub const GRANTS: usize = 6;
    /// `{ms, used, next release at or -1, …}` per extra window of the plan.
    pub const LIMITS: usize = 7;
    /// `{grant number, remaining, expires or -1, …}` per live grant with credits.
    pub const GRANT_LIST: usize = 8;
    pub const LEN: usize = 9;
}

/// Status word of the replies that report damaged totals, and its field.
const DAMAGED: &str = "damaged";
const DAMAGED_FIELD: usize = 1;
/// Status word of the replies that refuse a total beyond the ledger's bound,
/// and the total that was refused.
const TOO_LARGE: &str = "too_large";
const TOO_LARGE_TOTAL: usize = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BalanceReply {
    NoAccount,
    Damaged {
        field: String,
    },
    Found {
        plan: String,
        suspended: bool,
        used: u64,
        now_ms: i64,
        /// When the oldest counting debit leaves, and the credits leaving then.
        release: Option<(i64, u64)>,
        grants: u64,
        /// (window ms, used, next release at or -1) per extra window.
        limits: Vec<(u64, u64, i64)>,
        /// (grant number, remaining, expires or -1) per live grant.
        grant_list: Vec<(u64, u64, i64)>,
    },
}

/// Triples of integers from a flat array reply.
fn triples(reply: &[Value], index: usize) -> Result<Vec<(u64, u64, i64)>, LedgerError> {
    let Some(Value::Array(items)) = reply.get(index) else {
        return Err(LedgerError::Protocol(format!(
            "expected an array at {index}"
        )));
    };
    items
        .chunks_exact(3)
        .map(|t| Ok((unsigned(t, 0)?, unsigned(t, 1)?, int(t, 2)?)))
        .collect()
}

impl BalanceReply {
    pub(super) fn parse(reply: &[Value]) -> Result<BalanceReply, LedgerError> {
        if reply.is_empty() {
            return Ok(BalanceReply::NoAccount);
        }
        if reply.len() != balance_at::LEN {
            if text(reply, 0)? == DAMAGED {
                return Ok(BalanceReply::Damaged {
                    field: text(reply, DAMAGED_FIELD)?,
                });
            }
            return Err(LedgerError::Protocol(format!(
                "balance replied {} fields",
                reply.len()
            )));
        }
        let release_at = int(reply, balance_at::RELEASE_AT)?;
        Ok(BalanceReply::Found {
            plan: text(reply, balance_at::PLAN)?,
            suspended: text(reply, balance_at::SUSPENDED)? == "1",
            used: unsigned(reply, balance_at::USED)?,
            now_ms: int(reply, balance_at::NOW)?,
            release: if release_at >= 0 {
                Some((release_at, unsigned(reply, balance_at::RELEASE_CREDITS)?))
            } else {
                None
            },
            grants: unsigned(reply, balance_at::GRANTS)?,
            limits: triples(reply, balance_at::LIMITS)?,
            grant_list: triples(reply, balance_at::GRANT_LIST)?,
        })
    }
}

/// `history.lua`: `{more (0/1), {route number, name, ...}, member, at, member, at, ...}`.
mod history_at {
    pub const MORE: usize = 0;
    pub const ROUTES: usize = 1;
    /// The first `member, at` pair.
    pub const FIRST_ENTRY: usize = 2;
}

pub(super) struct HistoryReply {
    pub more: bool,
    /// Route number → name.
    pub routes: HashMap<u64, String>,
    /// `(member, at_ms)`, newest first.
    pub entries: Vec<(Vec<u8>, i64)>,
}

impl HistoryReply {
    pub(super) fn parse(reply: Vec<Value>) -> Result<HistoryReply, LedgerError> {
        let more = int(&reply, history_at::MORE)? == 1;
        let routes = match reply.get(history_at::ROUTES) {
            Some(Value::Array(pairs)) => pairs
                .chunks_exact(2)
                .filter_map(|pair| Some((unsigned(pair, 0).ok()?, text(pair, 1).ok()?)))
                .collect(),
            _ => HashMap::new(),
        };
        let mut entries =
            Vec::with_capacity(reply.len().saturating_sub(history_at::FIRST_ENTRY) / 2);
        let pairs = reply.get(history_at::FIRST_ENTRY..).unwrap_or_default();
        for pair in pairs.chunks_exact(2) {
            let Value::BulkString(member) = &pair[0] else {
                continue;
            };
            entries.push((member.clone(), int(pair, 1)?));
        }
        Ok(HistoryReply {
            more,
            routes,
            entries,
        })
    }
}

/// `refund.lua`: one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RefundReply {
    Refunded,
    Already,
    Unknown,
    /// Looked for by range before the range's end passed on the Redis clock.
    TooEarly,
}

impl RefundReply {
    pub(super) fn parse(reply: &str) -> Result<RefundReply, LedgerError> {
        match reply {
            "refunded" => Ok(RefundReply::Refunded),
            "already" => Ok(RefundReply::Already),
            "unknown" => Ok(RefundReply::Unknown),
            "early" => Ok(RefundReply::TooEarly),
            other => Err(LedgerError::Protocol(format!("refund replied {other}"))),
        }
    }
}

/// `settle.lua`: `{'settled', used}`, `{'refunded'}`, `{'unknown'}`,
/// `{'damaged', field}` or `{'too_large', total}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SettleReply {
    Settled { used: u64, alerts_queued: u64 },
    Refunded,
    Unknown,
    Damaged { field: String },
    TooLarge { total: String },
}

const SETTLED_USED: usize = 1;
const SETTLED_ALERTS: usize = 2;

impl SettleReply {
    pub(super) fn parse(reply: &[Value]) -> Result<SettleReply, LedgerError> {
        match text(reply, 0)?.as_str() {
            "settled" => Ok(SettleReply::Settled {
                used: unsigned(reply, SETTLED_USED)?,
                alerts_queued: unsigned(reply, SETTLED_ALERTS)?,
            }),
            "refunded" => Ok(SettleReply::Refunded),
            "unknown" => Ok(SettleReply::Unknown),
            DAMAGED => Ok(SettleReply::Damaged {
                field: text(reply, DAMAGED_FIELD)?,
            }),
            TOO_LARGE => Ok(SettleReply::TooLarge {
                total: text(reply, TOO_LARGE_TOTAL)?,
            }),
            other => Err(LedgerError::Protocol(format!("settle replied {other}"))),
        }
    }
}

/// `recount.lua`: `{}` (no account), `{'too_large', total}`, or
/// `{'recounted', previous used, used, counted, voided, changed}`.
mod recount_at {
    pub const PREVIOUS: usize = 1;
    pub const USED: usize = 2;
    pub const COUNTED: usize = 3;
    pub const VOIDED: usize = 4;
    pub const CHANGED: usize = 5;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RecountReply {
    NoAccount,
    TooLarge {
        total: String,
    },
    Recounted {
        previous_used: String,
        used: u64,
        counted: u64,
        voided: u64,
        changed: bool,
    },
}

impl RecountReply {
    pub(super) fn parse(reply: &[Value]) -> Result<RecountReply, LedgerError> {
        if reply.is_empty() {
            return Ok(RecountReply::NoAccount);
        }
        match text(reply, 0)?.as_str() {
            TOO_LARGE => Ok(RecountReply::TooLarge {
                total: text(reply, TOO_LARGE_TOTAL)?,
            }),
            "recounted" => Ok(RecountReply::Recounted {
                previous_used: text(reply, recount_at::PREVIOUS)?,
                used: unsigned(reply, recount_at::USED)?,
                counted: unsigned(reply, recount_at::COUNTED)?,
                voided: unsigned(reply, recount_at::VOIDED)?,
                changed: int(reply, recount_at::CHANGED)? == 1,
            }),
            other => Err(LedgerError::Protocol(format!("recount replied {other}"))),
        }
    }
}

/// `usage.lua`: `{}` (no account), `{'damaged', field}`, `{'unbuilt',
/// debits}`, or these positions.
mod usage_at {
    pub const PLAN: usize = 0;
    pub const SUSPENDED: usize = 1;
    pub const USED: usize = 2;
    pub const NOW: usize = 3;
    /// 0: no, 1: the aggregates were not kept, 2: they disagreed with `used`.
    pub const REBUILT: usize = 4;
    /// `{field, value, ...}` of the aggregates hash.
    pub const FIELDS: usize = 5;
    /// `{route number, route name, ...}` for the routes the fields name.
    pub const ROUTES: usize = 6;
    pub const LEN: usize = 7;
}

/// One field of the usage aggregates (see `lua/prelude.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum UsageField {
    /// `c:<day>:<route>`
    Credits { day: i64, route: u64, value: u64 },
    /// `n:<day>:<route>`
    Requests { day: i64, route: u64, value: u64 },
    /// `r:<day>`
    Leaving { day: i64, value: u64 },
    /// `g:<day>`: what grants paid of the credits spent that day.
    FromGrants { day: i64, value: u64 },
}

impl UsageField {
    fn parse(name: &[u8], value: u64) -> Option<UsageField> {
        let name = std::str::from_utf8(name).ok()?;
        let (kind, rest) = name.split_once(':')?;
        let cell = |rest: &str| -> Option<(i64, u64)> {
            let (day, route) = rest.split_once(':')?;
            Some((day.parse().ok()?, route.parse().ok()?))
        };
        match kind {
            "c" => cell(rest).map(|(day, route)| UsageField::Credits { day, route, value }),
            "n" => cell(rest).map(|(day, route)| UsageField::Requests { day, route, value }),
            "r" => Some(UsageField::Leaving {
                day: rest.parse().ok()?,
                value,
            }),
            "g" => Some(UsageField::FromGrants {
                day: rest.parse().ok()?,
                value,
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum UsageReply {
    NoAccount,
    Damaged {
        field: String,
    },
    /// The aggregates need a rebuild and the window holds more debits than a
    /// report may scan (the recount rebuilds them).
    Unbuilt {
        debits: u64,
    },
    Found {
        plan: String,
        suspended: bool,
        used: u64,
        now_ms: i64,
        /// 0, 1 or 2 as `usage_at::REBUILT` says.
        rebuilt: i64,
        fields: Vec<UsageField>,
        /// Route number → name.
        routes: HashMap<u64, String>,
    },
}

impl UsageReply {
    pub(super) fn parse(reply: &[Value]) -> Result<UsageReply, LedgerError> {
        if reply.is_empty() {
            return Ok(UsageReply::NoAccount);
        }
        if reply.len() != usage_at::LEN {
            match text(reply, 0)?.as_str() {
                DAMAGED => {
                    return Ok(UsageReply::Damaged {
                        field: text(reply, DAMAGED_FIELD)?,
                    })
                }
                "unbuilt" => {
                    return Ok(UsageReply::Unbuilt {
                        debits: unsigned(reply, 1)?,
                    })
                }
                _ => {}
            }
            return Err(LedgerError::Protocol(format!(
                "usage replied {} fields",
                reply.len()
            )));
        }
        let pairs = |index: usize| match reply.get(index) {
            Some(Value::Array(items)) => Ok(items.as_slice()),
            other => Err(LedgerError::Protocol(format!(
                "usage: expected an array at {index}, got {other:?}"
            ))),
        };
        let mut fields = Vec::new();
        for pair in pairs(usage_at::FIELDS)?.chunks_exact(2) {
            let (Value::BulkString(name), Ok(value)) = (&pair[0], int(pair, 1)) else {
                return Err(LedgerError::Protocol(format!(
                    "usage: unreadable field {pair:?}"
                )));
            };
            // The scripts delete a field at zero; a field they do not write is ignored.
            if let Some(field) = u64::try_from(value)
                .ok()
                .and_then(|value| UsageField::parse(name, value))
            {
                fields.push(field);
            }
        }
        let routes = pairs(usage_at::ROUTES)?
            .chunks_exact(2)
            .filter_map(|pair| Some((unsigned(pair, 0).ok()?, text(pair, 1).ok()?)))
            .collect();
        Ok(UsageReply::Found {
            plan: text(reply, usage_at::PLAN)?,
            suspended: text(reply, usage_at::SUSPENDED)? == "1",
            used: unsigned(reply, usage_at::USED)?,
            now_ms: int(reply, usage_at::NOW)?,
            rebuilt: int(reply, usage_at::REBUILT)?,
            fields,
            routes,
        })
    }
}

fn text(reply: &[Value], index: usize) -> Result<String, LedgerError> {
    match reply.get(index) {
        Some(Value::BulkString(bytes)) => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Some(Value::SimpleString(text)) => Ok(text.clone()),
        Some(Value::Int(n)) => Ok(n.to_string()),
        other => Err(LedgerError::Protocol(format!(
            "expected text at {index}, got {other:?}"
        ))),
    }
}

fn int(reply: &[Value], index: usize) -> Result<i64, LedgerError> {
    match reply.get(index) {
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| LedgerError::Protocol(format!("expected an integer at {index}"))),
        other => Err(LedgerError::Protocol(format!(
            "expected an integer at {index}, got {other:?}"
        ))),
    }
}

fn unsigned(reply: &[Value], index: usize) -> Result<u64, LedgerError> {
    u64::try_from(int(reply, index)?)
        .map_err(|_| LedgerError::Protocol(format!("negative value at {index}")))
}

/// `grants.lua`'s replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum GrantsReply {
    NoAccount,
    /// `{'created', number, created_at}`
    Created {
        number: u64,
        created_at_ms: i64,
    },
    /// `{'past', now}`: the expiry is not after the ledger's now.
    Past,
    /// `{'too_large', total}`
    TooLarge {
        total: String,
    },
    /// `{'grants', now, {number, credits, remaining, expires, created, voided, note, …}}`
    List(crate::ledger::GrantList),
    /// `{'voided', credits}`
    Voided {
        credits: u64,
    },
    /// `{'unknown'}`
    Unknown,
}

impl GrantsReply {
    pub(super) fn parse(reply: &[Value]) -> Result<GrantsReply, LedgerError> {
        Ok(match text(reply, 0)?.as_str() {
            "no_account" => GrantsReply::NoAccount,
            "created" => GrantsReply::Created {
                number: unsigned(reply, 1)?,
                created_at_ms: int(reply, 2)?,
            },
            "past" => GrantsReply::Past,
            TOO_LARGE => GrantsReply::TooLarge {
                total: text(reply, TOO_LARGE_TOTAL)?,
            },
            "voided" => GrantsReply::Voided {
                credits: unsigned(reply, 1)?,
            },
            "unknown" => GrantsReply::Unknown,
            "grants" => {
                let Some(Value::Array(items)) = reply.get(2) else {
                    return Err(LedgerError::Protocol("grants: no list".into()));
                };
                let mut grants = Vec::with_capacity(items.len() / 7);
                for g in items.chunks_exact(7) {
                    let expires = int(g, 3)?;
                    let voided = int(g, 5)? == 1;
                    grants.push(crate::ledger::Grant {
                        grant_id: crate::ledger::grant_id(unsigned(g, 0)?),
                        credits: unsigned(g, 1)?,
                        remaining: unsigned(g, 2)?,
                        expires_at_ms: (expires >= 0).then_some(expires),
                        created_at_ms: int(g, 4)?,
                        voided,
                        note: text(g, 6)?,
                    });
                }
                GrantsReply::List(crate::ledger::GrantList {
                    now_ms: int(reply, 1)?,
                    grants,
                })
            }
            other => return Err(LedgerError::Protocol(format!("grants replied {other:?}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debit_records_round_trip_packed_and_text_ids() {
        let packed = packed_id("00ff10a0b1c2d3e4").unwrap();
        assert_eq!(packed, [2, 0x00, 0xff, 0x10, 0xa0, 0xb1, 0xc2, 0xd3, 0xe4]);
        let mut member = packed.clone();
        member[0] |= REFUNDED;
        push_varint(&mut member, 300);
        push_varint(&mut member, 2);
        // 9 bytes of id, 2 of cost, 1 of route: 12 bytes keeps a skiplist entry in its smallest size.
        assert_eq!(member.len(), 12);
        assert_eq!(
            DebitRecord::parse(&member),
            Some(DebitRecord {
                request_id: "00ff10a0b1c2d3e4".into(),
                refunded: true,
                cost: 300,
                route: 2,
                from_allowance: 300,
            })
        );
        // Paid partly from grants: the split follows the route.
        let mut split = member.clone();
        split[0] |= SPLIT;
        for n in [120, 2, 3, 100, 9, 80] {
            push_varint(&mut split, n);
        }
        let record = DebitRecord::parse(&split).unwrap();
        assert_eq!(
            (record.cost, record.from_allowance, record.refunded),
            (300, 120, true)
        );
        // Paid wholly by grant 5: said by the flags alone, no longer a member.
        let mut whole = member.clone();
        whole[0] |= SPLIT | (5 << 3);
        assert_eq!(whole.len(), 12);
        let record = DebitRecord::parse(&whole).unwrap();
        assert_eq!(
            (record.cost, record.from_allowance, record.refunded),
            (300, 0, true)
        );
        // Upper-case or other lengths stay text, so they round-trip exactly.
        for id in ["00FF10A0B1C2D3E4", "client-req-1", "0123456789abcdef0"] {
            assert_eq!(packed_id(id), None);
            let mut member = text_id(id);
            push_varint(&mut member, u64::from(u32::MAX) * 4);
            push_varint(&mut member, 1);
            let record = DebitRecord::parse(&member).unwrap();
            assert_eq!(record.request_id, id);
            assert_eq!(record.cost, u64::from(u32::MAX) * 4);
            assert!(!record.refunded);
        }
        assert_eq!(DebitRecord::parse(&[0, 5, b'a']), None);
    }

    #[test]
    fn debit_lines_decode_every_status() {
        assert_eq!(
            DebitLine::parse("A 2 40 1500 2 1795521600000 0 0").unwrap(),
            DebitLine::Admitted {
                window: WindowFields {
                    plan_number: 2,
                    used: 40,
                    next_release_in_ms: 1500,
                    grants: 0,
                    limits: vec![],
                },
                recorded_as: RecordedAs::Fallback,
                now_ms: 1_795_521_600_000,
                from_grants: 0,
            }
        );
        assert_eq!(
            DebitLine::parse("A 1 40 1500 1 9 460 12 55 100 70 -1").unwrap(),
            DebitLine::Admitted {
                window: WindowFields {
                    plan_number: 1,
                    used: 40,
                    next_release_in_ms: 1500,
                    grants: 460,
                    limits: vec![(55, 100), (70, -1)],
                },
                recorded_as: RecordedAs::RequestId,
                now_ms: 9,
                from_grants: 12,
            }
        );
        assert_eq!(
            DebitLine::parse("R 1 10 -1 -1 7 0 1 30 2000").unwrap(),
            DebitLine::Rejected {
                window: WindowFields {
                    plan_number: 1,
                    used: 10,
                    next_release_in_ms: -1,
                    grants: 0,
                    limits: vec![(30, 2000)],
                },
                retry_after_ms: None,
                now_ms: 7,
                refused_by: 1,
            }
        );
        assert_eq!(
            DebitLine::parse("D used").unwrap(),
            DebitLine::Damaged {
                field: "used".into()
            }
        );
        assert_eq!(
            DebitLine::parse("X 9").unwrap(),
            DebitLine::PastDeadline { now_ms: 9 }
        );
        for bad in [
            "A 1 9223372036854775808 0 1 5",
            "A 1 -3 0 1 5",
            "A 1 3 0 7 5 0 0",
            "A 1 3 0 1 5 0 0 7",
            "A 1 3 0 1 5",
            "Q",
            "X soon",
        ] {
            assert!(DebitLine::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn balance_replies_name_damage_instead_of_failing() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(BalanceReply::parse(&[]).unwrap(), BalanceReply::NoAccount);
        assert_eq!(
            BalanceReply::parse(&[bulk("damaged"), bulk("used")]).unwrap(),
            BalanceReply::Damaged {
                field: "used".into()
            }
        );
        assert_eq!(
            BalanceReply::parse(&[
                bulk("pro"),
                bulk("0"),
                Value::Int(12),
                Value::Int(1000),
                Value::Int(-1),
                Value::Int(0),
                Value::Int(30),
                Value::Array(vec![Value::Int(3_600_000), Value::Int(5), Value::Int(-1)]),
                Value::Array(vec![Value::Int(2), Value::Int(30), Value::Int(-1)]),
            ])
            .unwrap(),
            BalanceReply::Found {
                plan: "pro".into(),
                suspended: false,
                used: 12,
                now_ms: 1000,
                release: None,
                grants: 30,
                limits: vec![(3_600_000, 5, -1)],
                grant_list: vec![(2, 30, -1)],
            }
        );
    }

    #[test]
    fn usage_replies_decode_fields_routes_and_refusals() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(UsageReply::parse(&[]).unwrap(), UsageReply::NoAccount);
        assert_eq!(
            UsageReply::parse(&[bulk("unbuilt"), Value::Int(250_000)]).unwrap(),
            UsageReply::Unbuilt { debits: 250_000 }
        );
        assert_eq!(
            UsageReply::parse(&[bulk("damaged"), bulk("seen")]).unwrap(),
            UsageReply::Damaged {
                field: "seen".into()
            }
        );
        let fields = Value::Array(
            [
                "c:20781:1",
                "40",
                "n:20781:1",
                "4",
                "r:20811",
                "40",
                "x:junk",
                "1",
                "n:20780:2",
                "1",
            ]
            .iter()
            .map(|s| bulk(s))
            .collect(),
        );
        let routes = Value::Array(vec![
            bulk("1"),
            bulk("image-generate"),
            bulk("2"),
            bulk("agents"),
        ]);
        let reply = UsageReply::parse(&[
            bulk("pro"),
            bulk("0"),
            Value::Int(40),
            Value::Int(1_795_521_600_000),
            Value::Int(0),
            fields,
            routes,
        ])
        .unwrap();
        let UsageReply::Found {
            used,
            fields,
            routes,
            rebuilt,
            ..
        } = reply
        else {
            panic!("{reply:?}");
        };
        assert_eq!((used, rebuilt), (40, 0));
        assert_eq!(
            fields,
            [
                UsageField::Credits {
                    day: 20_781,
                    route: 1,
                    value: 40
                },
                UsageField::Requests {
                    day: 20_781,
                    route: 1,
                    value: 4
                },
                UsageField::Leaving {
                    day: 20_811,
                    value: 40
                },
                UsageField::Requests {
                    day: 20_780,
                    route: 2,
                    value: 1
                },
            ],
            "an unknown field is skipped"
        );
        assert_eq!(routes[&2], "agents");
    }
}
