//! What earlier claims already received under this policy: the input that makes caps across
//! claims, "one M1 per enterprise" and "a person once per measure" decidable by a pure
//! function. The award service folds it from its own log with [`History::record`]; replay
//! folds it the same way, in the same order, so the same decisions come out.

use crate::Evaluation;
use huiqi_events::payloads::AwardStatus;
use huiqi_events::payloads::{Application, AwardDecision};
use huiqi_events::Money;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct History {
    /// Enterprises that have their one M1 award: uscc → claim id.
    pub m1_enterprises: BTreeMap<String, String>,
    /// Persons paid under M1: id number → the enterprise they were counted for.
    pub m1_persons: BTreeMap<String, String>,
    /// Numbers already granted the M4 data package.
    pub m4_phones: BTreeSet<String>,
    /// Persons already granted M5 points.
    pub m5_persons: BTreeSet<String>,
    /// M9 already awarded per enterprise.
    pub m9_paid: BTreeMap<String, Money>,
    /// M10(a) travellers already paid per (enterprise, exhibition name).
    pub m10_exhibition_travellers: BTreeMap<String, BTreeSet<String>>,
    /// M10(b) (trip key) already paid: "uscc|country|departure|id".
    pub m10_trip_travellers: BTreeSet<String>,
    /// M18 already awarded per enterprise, and charters already paid ("uscc|contract_no").
    pub m18_paid: BTreeMap<String, Money>,
    pub m18_charters: BTreeSet<String>,
    /// Persons carried on an M18 charter, per enterprise: "uscc|id".
    pub m18_passengers: BTreeSet<String>,
    /// Persons paid under M19(a) and M19(b).
    pub m19a_persons: BTreeSet<String>,
    pub m19b_persons: BTreeSet<String>,
    /// M21 already awarded per agency, and persons already counted (id → agency).
    pub m21_paid: BTreeMap<String, Money>,
    pub m21_persons: BTreeMap<String, String>,
}

impl History {
    /// Adds an evaluation's effects: the decision and its entitlements.
    pub fn record(&mut self, app: &Application, e: &Evaluation) {
        self.record_decision(app, &e.decision);
        for ent in &e.entitlements {
            match ent {
                crate::Entitlement::DataPackage { phone, .. } => self.record_data_package(phone),
                crate::Entitlement::ResidentPoints { person, .. } => {
                    self.record_resident_points(person)
                }
            }
        }
    }

    pub fn record_data_package(&mut self, phone: &str) {
        self.m4_phones.insert(phone.to_string());
    }

    pub fn record_resident_points(&mut self, id_number: &str) {
        self.m5_persons.insert(id_number.to_string());
    }

    /// Adds a decision's effects. Only what was actually paid counts.
    pub fn record_decision(&mut self, app: &Application, d: &AwardDecision) {
        let uscc = d.applicant_uscc.clone();
        if d.status == AwardStatus::Approved {
            let paid_persons = d
                .lines
                .iter()
                .filter(|l| l.paid)
                .filter_map(|l| l.person.clone().map(|p| (l.item.as_str(), p)));
            match d.measure.as_str() {
                "M1" => {
                    self.m1_enterprises
                        .entry(uscc.clone())
                        .or_insert_with(|| d.claim_id.clone());
                    for (_, p) in paid_persons {
                        self.m1_persons.entry(p).or_insert_with(|| uscc.clone());
                    }
                }
                "M9" => {
                    *self.m9_paid.entry(uscc).or_default() = self
                        .m9_paid
                        .get(&d.applicant_uscc)
                        .copied()
                        .unwrap_or_default()
                        + d.total;
                }
                "M10" => {
                    for l in d.lines.iter().filter(|l| l.paid) {
                        let Some(p) = &l.person else { continue };
                        if let Some(name) = l.item.strip_prefix("exhibition:") {
                            self.m10_exhibition_travellers
                                .entry(format!("{uscc}|{name}"))
                                .or_default()
                                .insert(p.clone());
                        } else if let Some(trip) = l.item.strip_prefix("rcep_trip:") {
                            self.m10_trip_travellers
                                .insert(format!("{uscc}|{trip}|{p}"));
                        }
                    }
                }
                "M18" => {
                    let prev = self.m18_paid.get(&uscc).copied().unwrap_or_default();
                    self.m18_paid.insert(uscc.clone(), prev + d.total);
                    for l in d.lines.iter().filter(|l| l.paid) {
                        let Some(c) = l.item.strip_prefix("charter:") else {
                            continue;
                        };
                        self.m18_charters.insert(format!("{uscc}|{c}"));
                        // Charter passengers are excluded from M19(b) through this enterprise.
                        for charter in app.charters.iter().flatten().filter(|x| x.contract_no == c)
                        {
                            for p in &charter.passengers {
                                self.m18_passengers.insert(format!("{uscc}|{p}"));
                            }
                        }
                    }
                }
                "M19" => {
                    for (item, p) in paid_persons {
                        if item == "poverty_transport" {
                            self.m19a_persons.insert(p);
                        } else {
                            self.m19b_persons.insert(p);
                        }
                    }
                }
                "M21" => {
                    let prev = self.m21_paid.get(&uscc).copied().unwrap_or_default();
                    self.m21_paid.insert(uscc.clone(), prev + d.total);
                    for (_, p) in paid_persons {
                        self.m21_persons.entry(p).or_insert_with(|| uscc.clone());
                    }
                }
                _ => {}
            }
        }
    }
}
