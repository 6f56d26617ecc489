//! The difference between the last applied table and the desired one, as the statements of
//! one nft transaction. Order matters inside a transaction: new chains and sets exist before
//! rules and elements refer to them; chains whose rules change are flushed and refilled;
//! elements and sets go before the chains they point at are deleted.

use std::collections::BTreeSet;

use super::model::{Chain, Table};

/// Whether a rule refers to the set `name` (`@name` as a whole word).
fn refers_to(rule: &str, name: &str) -> bool {
    rule.split_whitespace()
        .any(|w| w.strip_prefix('@') == Some(name))
}

/// The statements that turn `old` (as applied) into `new`; empty when they are equal.
/// Both must be of one family and name.
pub fn diff(old: &Table, new: &Table, out: &mut Vec<String>) {
    // sets whose declaration changes are deleted and made anew
    let recreated: BTreeSet<&String> = new
        .sets
        .iter()
        .filter(|(n, s)| old.sets.get(*n).is_some_and(|o| !o.same_decl(s)))
        .map(|(n, _)| n)
        .collect();
    // chains to refill: changed rules, or rules on a recreated set
    let dirty: BTreeSet<&String> = new
        .chains
        .iter()
        .filter(|(n, c)| match old.chains.get(*n) {
            None => false,
            Some(o) => {
                o.rules != c.rules
                    || o.rules
                        .iter()
                        .any(|r| recreated.iter().any(|s| refers_to(r, s)))
            }
        })
        .map(|(n, _)| n)
        .collect();
    let removed_chains: Vec<(&String, &Chain)> = old
        .chains
        .iter()
        .filter(|(n, _)| !new.chains.contains_key(*n))
        .collect();

    // 1. new chains and sets
    for (name, chain) in new
        .chains
        .iter()
        .filter(|(n, _)| !old.chains.contains_key(*n))
    {
        out.push(new.add_chain(name, chain));
    }
    // 2. empty the chains that change or go
    for name in dirty
        .iter()
        .copied()
        .chain(removed_chains.iter().map(|(n, _)| *n))
    {
        out.push(format!("flush chain {} {name}", new.id()));
    }
    // 3. elements that go or change value
    for (name, set) in &new.sets {
        let Some(o) = old.sets.get(name).filter(|_| !recreated.contains(name)) else {
            continue;
        };
        let gone = o
            .elements
            .iter()
            .filter(|(k, v)| set.elements.get(*k) != Some(*v))
            .map(|(k, _)| k);
        new.delete_elements(name, gone, out);
    }
    // 4. sets that go or are made anew (nothing refers to them any more)
    for (name, set) in &old.sets {
        if !new.sets.contains_key(name) || recreated.contains(name) {
            out.push(format!("delete {} {} {name}", set.keyword(), new.id()));
        }
    }
    for (name, set) in &new.sets {
        if !old.sets.contains_key(name) || recreated.contains(name) {
            out.push(new.add_set(name, set));
        }
    }
    // 5. rules of new and changed chains
    for (name, chain) in &new.chains {
        if !old.chains.contains_key(name) || dirty.contains(name) {
            new.add_rules(name, chain, out);
        }
    }
    // 6. elements that come or change value
    for (name, set) in &new.sets {
        match old.sets.get(name).filter(|_| !recreated.contains(name)) {
            None => new.add_elements(name, set, &set.elements, out),
            Some(o) => {
                let added = set
                    .elements
                    .iter()
                    .filter(|(k, v)| o.elements.get(*k) != Some(*v));
                new.add_elements(name, set, added, out);
            }
        }
    }
    // 7. chains that go
    for (name, _) in removed_chains {
        out.push(format!("delete chain {} {name}", new.id()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::{Family, Set};

    fn table(chains: &[(&str, &[&str])], sets: &[(&str, Set)]) -> Table {
        let mut t = Table::new(Family::V4, "skiff");
        for (n, rules) in chains {
            t.chains.insert(
                n.to_string(),
                Chain::regular(rules.iter().map(|r| r.to_string()).collect()),
            );
        }
        for (n, s) in sets {
            t.sets.insert(n.to_string(), s.clone());
        }
        t
    }

    fn vmap(elements: &[(&str, &str)]) -> Set {
        let mut s = Set::vmap("ipv4_addr . inet_proto . inet_service");
        for (k, v) in elements {
            s.elements.insert(k.to_string(), v.to_string());
        }
        s
    }

    fn affinity(timeout: u32) -> Set {
        Set {
            dynamic_timeout: Some(timeout),
            ..Set::plain("ipv4_addr")
        }
    }

    #[test]
    fn diff_table() {
        let base_chains: &[(&str, &[&str])] = &[
            ("svc-a", &["numgen random mod 1 vmap { 0 : goto ep-1 }"]),
            ("ep-1", &["dnat to 10.0.0.1:80"]),
        ];
        let cases: Vec<(&str, Table, Table, Vec<&str>)> = vec![
            (
                "equal tables: nothing to send",
                table(base_chains, &[("m", vmap(&[("k1", "goto svc-a")]))]),
                table(base_chains, &[("m", vmap(&[("k1", "goto svc-a")]))]),
                vec![],
            ),
            (
                "an endpoint added: new chain, refilled service chain",
                table(base_chains, &[]),
                table(
                    &[
                        (
                            "svc-a",
                            &["numgen random mod 2 vmap { 0 : goto ep-1, 1 : goto ep-2 }"],
                        ),
                        ("ep-1", &["dnat to 10.0.0.1:80"]),
                        ("ep-2", &["dnat to 10.0.0.2:80"]),
                    ],
                    &[],
                ),
                vec![
                    "add chain ip skiff ep-2",
                    "flush chain ip skiff svc-a",
                    "add rule ip skiff ep-2 dnat to 10.0.0.2:80",
                    "add rule ip skiff svc-a numgen random mod 2 vmap { 0 : goto ep-1, 1 : goto ep-2 }",
                ],
            ),
            (
                "a service removed: element, then its chains",
                table(
                    base_chains,
                    &[("m", vmap(&[("k1", "goto svc-a"), ("k2", "goto x")]))],
                ),
                table(&[], &[("m", vmap(&[("k2", "goto x")]))]),
                vec![
                    "flush chain ip skiff ep-1",
                    "flush chain ip skiff svc-a",
                    "delete element ip skiff m { k1 }",
                    "delete chain ip skiff ep-1",
                    "delete chain ip skiff svc-a",
                ],
            ),
            (
                "an element changes its verdict: deleted and added",
                table(base_chains, &[("m", vmap(&[("k1", "goto svc-a")]))]),
                table(base_chains, &[("m", vmap(&[("k1", "goto reject-chain")]))]),
                vec![
                    "delete element ip skiff m { k1 }",
                    "add element ip skiff m { k1 : goto reject-chain }",
                ],
            ),
            (
                "an affinity timeout changes: the set is made anew and its users refilled",
                table(
                    &[("ep-1", &["update @aff { ip saddr }"])],
                    &[("aff", affinity(60))],
                ),
                table(
                    &[("ep-1", &["update @aff { ip saddr }"])],
                    &[("aff", affinity(120))],
                ),
                vec![
                    "flush chain ip skiff ep-1",
                    "delete set ip skiff aff",
                    "add set ip skiff aff { type ipv4_addr; flags dynamic,timeout; timeout 120s; }",
                    "add rule ip skiff ep-1 update @aff { ip saddr }",
                ],
            ),
        ];
        for (name, old, new, want) in cases {
            let mut out = Vec::new();
            diff(&old, &new, &mut out);
            assert_eq!(out, want, "{name}");
        }
    }

    #[test]
    fn refers_to_whole_names() {
        assert!(refers_to("ip saddr @aff-1 goto x", "aff-1"));
        assert!(!refers_to("ip saddr @aff-10 goto x", "aff-1"));
    }
}
