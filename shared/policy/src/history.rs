//! What earlier claims counted under this policy: the input that makes caps across claims,
//! "one award per enterprise", "a person once", cumulative thresholds and prior payments offset
//! once decidable by a pure function.
//!
//! It is a ledger of typed [`Count`]s keyed by [`Key`] (measure, kind, applicant, item, person),
//! each entry naming the claim that counted it. The award service folds it from the counts its
//! decisions carry (and the entitlements it granted), in log order; replay folds it the same
//! way, so the same decisions come out. It knows no measure: each measure decides which keys it
//! reads and which counts it adds.

use huiqi_events::history::{Count, Key, Kind};
use huiqi_events::Money;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use huiqi_events::history::{Count as HistoryCount, Relied};

/// One earlier count: the claim that made it, the applicant of that claim, the amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub claim_id: String,
    pub by: String,
    pub amount: Money,
}

/// One line of the history as a file (`huiqi evaluate --history`) or a report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(flatten)]
    key: Key,
    claim_id: String,
    #[serde(default)]
    by: String,
    amount: Money,
}

/// The ledger. Point lookups (the hot path of every decision) go through a hash map; the
/// scans by applicant go through an ordered index of the keys, so nothing a decision reads
/// depends on hash order.
///
/// The map is split into [`SHARDS`] maps by a fixed hash of the key. One map of half a
/// million persons rehashed everything at once when it doubled — a full second in which no
/// claim was decided (seen as the p99 of `huiqi loadgen --rate 300`); a shard doubles at a
/// 256th of that.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "Vec<Line>", into = "Vec<Line>")]
pub struct History {
    entries: Vec<HashMap<Key, Vec<Entry>, Seeded>>,
    len: usize,
    /// (measure, kind, uscc) → the keys under it, ordered.
    scans: BTreeMap<(String, Kind, String), BTreeSet<Key>>,
}

/// The maps' hasher: foldhash seeded per process (hashbrown's own default). SipHash, std's
/// default, was a tenth of a replay's time; a per-process seed keeps crafted keys from
/// colliding on purpose, and nothing depends on hash order (scans are ordered).
type Seeded = foldhash::quality::RandomState;

/// How many maps the ledger is split into.
const SHARDS: usize = 256;

impl Default for History {
    fn default() -> Self {
        History {
            entries: (0..SHARDS).map(|_| HashMap::default()).collect(),
            len: 0,
            scans: BTreeMap::new(),
        }
    }
}

/// The shard of a key: FNV-1a over its fields, fixed (unkeyed) so equal histories shard
/// alike, and cheap — the map hashes the key again inside the shard.
fn shard(key: &Key) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [&key.person, &key.item, &key.uscc, &key.measure] {
        for b in part.bytes().chain([0xff]) {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= key.kind as u64;
    (h % SHARDS as u64) as usize
}

impl PartialEq for History {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl From<Vec<Line>> for History {
    fn from(lines: Vec<Line>) -> Self {
        let mut h = History::default();
        for l in lines {
            h.insert(
                l.key,
                Entry {
                    claim_id: l.claim_id,
                    by: l.by,
                    amount: l.amount,
                },
            );
        }
        h
    }
}

impl From<History> for Vec<Line> {
    fn from(h: History) -> Self {
        let mut entries: Vec<(Key, Vec<Entry>)> = h.entries.into_iter().flatten().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
            .into_iter()
            .flat_map(|(key, es)| {
                es.into_iter().map(move |e| Line {
                    key: key.clone(),
                    claim_id: e.claim_id,
                    by: e.by,
                    amount: e.amount,
                })
            })
            .collect()
    }
}

impl History {
    /// Adds what one decision (claim `claim_id` of applicant `by`) counted.
    pub fn add(&mut self, claim_id: &str, by: &str, counts: &[Count]) {
        for c in counts {
            self.insert(
                c.key.clone(),
                Entry {
                    claim_id: claim_id.to_string(),
                    by: by.to_string(),
                    amount: c.amount,
                },
            );
        }
    }

    /// Withdraws what claim `claim_id` counted under the keys of `counts` (a supplementary
    /// award replaces the claim's counts with those of its new decision). A key left with no
    /// entry is gone, as if never counted.
    pub fn withdraw(&mut self, claim_id: &str, counts: &[Count]) {
        for c in counts {
            let shard = &mut self.entries[shard(&c.key)];
            let Some(es) = shard.get_mut(&c.key) else {
                continue;
            };
            es.retain(|e| e.claim_id != claim_id);
            if es.is_empty() {
                shard.remove(&c.key);
                self.len -= 1;
                let scan = (c.key.measure.clone(), c.key.kind, c.key.uscc.clone());
                if let Some(keys) = self.scans.get_mut(&scan) {
                    keys.remove(&c.key);
                    if keys.is_empty() {
                        self.scans.remove(&scan);
                    }
                }
            }
        }
    }

    fn insert(&mut self, key: Key, entry: Entry) {
        let shard = &mut self.entries[shard(&key)];
        match shard.get_mut(&key) {
            Some(es) => es.push(entry),
            None => {
                // Only scans by applicant are ever asked for (an agency's persons, an
                // enterprise's exhibition travellers): keys of no applicant stay out of the
                // ordered index, which would otherwise hold every person ever counted.
                if !key.uscc.is_empty() && (!key.item.is_empty() || !key.person.is_empty()) {
                    self.scans
                        .entry((key.measure.clone(), key.kind, key.uscc.clone()))
                        .or_default()
                        .insert(key.clone());
                }
                shard.insert(key, vec![entry]);
                self.len += 1;
            }
        }
    }

    /// The entries under exactly `key`.
    pub fn get(&self, key: &Key) -> &[Entry] {
        self.entries[shard(key)]
            .get(key)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn contains(&self, key: &Key) -> bool {
        !self.get(key).is_empty()
    }

    /// The sum of the amounts under `key`.
    pub fn total(&self, key: &Key) -> Money {
        self.get(key).iter().map(|e| e.amount).sum()
    }

    /// Every key of `measure` and `kind` for applicant `uscc` (all items and persons), in key
    /// order: e.g. an agency's counted persons, an enterprise's paid charters.
    pub fn of<'a>(
        &'a self,
        measure: &str,
        kind: Kind,
        uscc: &str,
    ) -> impl Iterator<Item = (&'a Key, &'a [Entry])> + 'a {
        self.scans
            .get(&(measure.to_string(), kind, uscc.to_string()))
            .into_iter()
            .flatten()
            .map(|k| (k, self.get(k)))
    }

    /// Every key of `measure`, `kind`, applicant and `item` (all persons).
    pub fn of_item<'a>(
        &'a self,
        measure: &str,
        kind: Kind,
        uscc: &str,
        item: &str,
    ) -> impl Iterator<Item = (&'a Key, &'a [Entry])> + 'a {
        let item = item.to_string();
        self.of(measure, kind, uscc)
            .filter(move |(k, _)| k.item == item)
    }

    /// How many keys the history holds (for reports).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_scan_by_applicant_and_round_trip_as_json() {
        let mut h = History::default();
        let c = |kind, uscc: &str, item: &str, person: &str, amount: i64| Count {
            key: Key::new("M21", kind).uscc(uscc).item(item).person(person),
            amount: Money::yuan(amount),
        };
        h.add(
            "C-1",
            "A",
            &[
                c(Kind::Award, "A", "", "", 1000),
                c(Kind::Person, "A", "", "p1", 500),
            ],
        );
        h.add(
            "C-2",
            "A",
            &[
                c(Kind::Award, "A", "", "", 500),
                c(Kind::Person, "A", "", "p2", 500),
            ],
        );
        h.add("C-3", "B", &[c(Kind::Person, "B", "", "p1", 500)]);
        assert_eq!(
            h.total(&Key::new("M21", Kind::Award).uscc("A")),
            Money::yuan(1500)
        );
        let persons: Vec<&str> = h
            .of("M21", Kind::Person, "A")
            .map(|(k, _)| k.person.as_str())
            .collect();
        assert_eq!(persons, vec!["p1", "p2"]);
        let json = serde_json::to_string(&h).unwrap();
        let back: History = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
    }
}
