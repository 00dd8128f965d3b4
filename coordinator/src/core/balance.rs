//! The balancer: which nodes serve which chain.
//!
//! Each chain with demand (an account on it below its standard) has a load; the farm's
//! capacity (the sum of the nodes' rates) is split across those chains in proportion to their
//! loads. Nodes keep the chain they have (sticky) unless moving one reduces the total
//! misallocation |served − target| by more than `hysteresis` times the node's own capacity, so
//! small changes in load or rate never make nodes flap between chains. Nodes without a chain
//! (new, promoted, or whose chain lost its demand) go first to the chain that lacks the most,
//! and no chain with demand is left without a node while another chain has two or more.
//! A *pinned* node (a Stratum miner served from another chain's account than its own, because
//! its own chain cannot carve it a slot) counts on the chain it serves and is never moved.
//! The policy of the accounts then decides, within a chain, which account each range serves.

use std::collections::BTreeMap;

/// A chain with demand, and its load.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainLoad {
    pub name: String,
    pub load: f64,
}

/// A node that can take work: its capacity (hashes per second) and current chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCapacity<K> {
    pub node: K,
    pub capacity: f64,
    pub chain: Option<String>,
    /// Counted on `chain` and kept there: it serves that chain whatever it is placed on.
    pub pinned: bool,
}

/// The chain of every node (`None`: no chain has demand). Deterministic for equal inputs.
pub fn balance<K: Ord + Clone>(
    chains: &[ChainLoad],
    nodes: &[NodeCapacity<K>],
    hysteresis: f64,
) -> BTreeMap<K, Option<String>> {
    let chains: Vec<&ChainLoad> = chains.iter().filter(|c| c.load.is_finite() && c.load > 0.0).collect();
    if chains.is_empty() {
        return nodes.iter().map(|n| (n.node.clone(), None)).collect();
    }
    let cap = |n: &NodeCapacity<K>| if n.capacity.is_finite() && n.capacity > 1.0 { n.capacity } else { 1.0 };
    let total_cap: f64 = nodes.iter().map(cap).sum();
    let total_load: f64 = chains.iter().map(|c| c.load).sum();
    let target: Vec<f64> = chains.iter().map(|c| total_cap * c.load / total_load).collect();
    let index = |name: &str| chains.iter().position(|c| c.name == name);

    let mut served = vec![0.0; chains.len()];
    let mut at: Vec<Option<usize>> = nodes.iter().map(|n| n.chain.as_deref().and_then(index)).collect();
    for (i, n) in nodes.iter().enumerate() {
        if let Some(c) = at[i] {
            served[c] += cap(n);
        }
    }
    // Nodes without a chain, largest first, to the chain lacking the most. (A pinned node on a
    // chain without demand stays out of the plan.)
    let mut free: Vec<usize> = (0..nodes.len()).filter(|&i| at[i].is_none() && !nodes[i].pinned).collect();
    free.sort_by(|&a, &b| cap(&nodes[b]).total_cmp(&cap(&nodes[a])).then(nodes[a].node.cmp(&nodes[b].node)));
    for i in free {
        let c = (0..chains.len())
            .max_by(|&a, &b| (target[a] - served[a]).total_cmp(&(target[b] - served[b])).then(b.cmp(&a)))
            .expect("at least one chain");
        at[i] = Some(c);
        served[c] += cap(&nodes[i]);
    }
    // No chain with demand is left without a node while another has two or more: it takes
    // a node of the most over-served such chain: one placed just now if any, else the smallest.
    for starved in 0..chains.len() {
        if at.contains(&Some(starved)) {
            continue;
        }
        let movable = |i: usize, c: usize| at[i] == Some(c) && !nodes[i].pinned;
        let donor = (0..chains.len())
            .filter(|&c| at.iter().filter(|&&x| x == Some(c)).count() >= 2 && (0..nodes.len()).any(|i| movable(i, c)))
            .max_by(|&a, &b| (served[a] - target[a]).total_cmp(&(served[b] - target[b])).then(b.cmp(&a)));
        let Some(donor) = donor else { break };
        // Nodes placed just now move first: they have no work in flight yet.
        let settled = |i: usize| nodes[i].chain.as_deref().and_then(index).is_some();
        let i = (0..nodes.len())
            .filter(|&i| movable(i, donor))
            .min_by(|&a, &b| {
                settled(a)
                    .cmp(&settled(b))
                    .then(cap(&nodes[a]).total_cmp(&cap(&nodes[b])))
                    .then(nodes[a].node.cmp(&nodes[b].node))
            })
            .expect("the donor has nodes");
        served[donor] -= cap(&nodes[i]);
        served[starved] += cap(&nodes[i]);
        at[i] = Some(starved);
    }
    // Moves that cut the misallocation by more than the hysteresis, best first.
    for _ in 0..nodes.len() * chains.len() {
        let mut best: Option<(f64, usize, usize)> = None;
        for (i, n) in nodes.iter().enumerate().filter(|(_, n)| !n.pinned) {
            let from = at[i].expect("every node placed");
            let x = cap(n);
            for to in (0..chains.len()).filter(|&to| to != from) {
                let before = (served[from] - target[from]).abs() + (served[to] - target[to]).abs();
                let after = (served[from] - x - target[from]).abs() + (served[to] + x - target[to]).abs();
                let gain = before - after;
                if gain > hysteresis * x && best.is_none_or(|(g, _, _)| gain > g) {
                    best = Some((gain, i, to));
                }
            }
        }
        let Some((_, i, to)) = best else { break };
        let from = at[i].expect("placed");
        served[from] -= cap(&nodes[i]);
        served[to] += cap(&nodes[i]);
        at[i] = Some(to);
    }
    nodes
        .iter()
        .zip(at)
        .map(|(n, c)| (n.node.clone(), if n.pinned { n.chain.clone() } else { c.map(|c| chains[c].name.clone()) }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chains(loads: &[(&str, f64)]) -> Vec<ChainLoad> {
        loads.iter().map(|&(name, load)| ChainLoad { name: name.into(), load }).collect()
    }

    fn nodes(list: &[(u32, f64, Option<&str>)]) -> Vec<NodeCapacity<u32>> {
        list.iter()
            .map(|&(node, capacity, chain)| NodeCapacity {
                node,
                capacity,
                chain: chain.map(Into::into),
                pinned: false,
            })
            .collect()
    }

    fn count(map: &BTreeMap<u32, Option<String>>, chain: &str) -> usize {
        map.values().filter(|c| c.as_deref() == Some(chain)).count()
    }

    #[test]
    fn capacity_follows_the_load() {
        let c = chains(&[("heavy", 3.0), ("light", 1.0)]);
        let n = nodes(&[(1, 10.0, None), (2, 10.0, None), (3, 10.0, None), (4, 10.0, None)]);
        let map = balance(&c, &n, 0.5);
        assert_eq!((count(&map, "heavy"), count(&map, "light")), (3, 1));
    }

    #[test]
    fn removing_a_node_moves_no_more_than_needed() {
        let c = chains(&[("heavy", 3.0), ("light", 1.0)]);
        let all = nodes(&[
            (1, 10.0, Some("heavy")),
            (2, 10.0, Some("heavy")),
            (3, 10.0, Some("heavy")),
            (4, 10.0, Some("light")),
        ]);
        assert_eq!(balance(&c, &all, 0.5), all.iter().map(|n| (n.node, n.chain.clone())).collect());
        // A heavy node goes: 2 + 1 is still the best split; nobody moves.
        let map = balance(&c, &all[1..], 0.5);
        assert_eq!((count(&map, "heavy"), count(&map, "light")), (2, 1));
        // The light node goes: exactly one heavy node moves over.
        let map = balance(&c, &all[..3], 0.5);
        assert_eq!((count(&map, "heavy"), count(&map, "light")), (2, 1));
        // Even when the split alone would not justify a move (4:1 over three nodes), a chain
        // with demand is not starved.
        let c = chains(&[("heavy", 4.0), ("light", 1.0)]);
        let map = balance(&c, &all[..3], 0.5);
        assert_eq!((count(&map, "heavy"), count(&map, "light")), (2, 1));
    }

    #[test]
    fn small_changes_do_not_flap() {
        let n = nodes(&[(1, 10.0, Some("a")), (2, 10.0, Some("b"))]);
        for load in [0.8, 1.0, 1.3, 1.9] {
            let map = balance(&chains(&[("a", load), ("b", 1.0)]), &n, 0.5);
            assert_eq!(count(&map, "a"), 1, "load {load}");
        }
    }

    #[test]
    fn no_demand_no_chain() {
        let n = nodes(&[(1, 10.0, Some("a"))]);
        assert_eq!(balance(&[], &n, 0.5)[&1], None);
        // A chain that lost its demand gives its nodes to the others.
        let map = balance(&chains(&[("b", 1.0)]), &n, 0.5);
        assert_eq!(map[&1].as_deref(), Some("b"));
    }

    #[test]
    fn a_pinned_node_counts_where_it_is_and_never_moves() {
        let c = chains(&[("a", 1.0), ("b", 1.0)]);
        // Pinned on a: a free node goes to b; unpinned, a would be left without a node anyway.
        let mut n = nodes(&[(1, 10.0, Some("a")), (2, 10.0, None)]);
        n[0].pinned = true;
        let map = balance(&c, &n, 0.5);
        assert_eq!((map[&1].as_deref(), map[&2].as_deref()), (Some("a"), Some("b")));
        // Two pinned on a and b starved: a pinned node is no donor.
        let mut n = nodes(&[(1, 10.0, Some("a")), (2, 10.0, Some("a"))]);
        n.iter_mut().for_each(|x| x.pinned = true);
        let map = balance(&c, &n, 0.5);
        assert_eq!(count(&map, "a"), 2);
        // Pinned on a chain without demand: left as it is, counted nowhere.
        let mut n = nodes(&[(1, 10.0, Some("gone")), (2, 10.0, None)]);
        n[0].pinned = true;
        let map = balance(&c, &n, 0.5);
        assert_eq!(map[&1].as_deref(), Some("gone"));
    }

    proptest! {
        /// From scratch, every chain's share of capacity is within one node's capacity of its
        /// target, and a second run changes nothing (stable).
        #[test]
        fn split_is_near_target_and_stable(
            loads in proptest::collection::vec(0.1f64..10.0, 1..4),
            caps in proptest::collection::vec(1.0f64..100.0, 1..12),
        ) {
            let c: Vec<ChainLoad> = loads.iter().enumerate().map(|(i, &load)| ChainLoad { name: format!("c{i}"), load }).collect();
            let n: Vec<NodeCapacity<usize>> = caps.iter().enumerate().map(|(i, &capacity)| NodeCapacity { node: i, capacity, chain: None, pinned: false }).collect();
            let map = balance(&c, &n, 0.5);
            let total: f64 = caps.iter().sum();
            let max_cap = caps.iter().cloned().fold(0.0, f64::max);
            let total_load: f64 = loads.iter().sum();
            let mut misallocation = 0.0;
            for ch in &c {
                let served: f64 = n.iter().filter(|x| map[&x.node].as_deref() == Some(&ch.name)).map(|x| x.capacity).sum();
                misallocation += (served - total * ch.load / total_load).abs();
            }
            prop_assert!(misallocation <= 2.0 * max_cap * c.len() as f64, "misallocation {misallocation}");
            let again: Vec<NodeCapacity<usize>> = n.iter().map(|x| NodeCapacity { chain: map[&x.node].clone(), ..x.clone() }).collect();
            prop_assert_eq!(balance(&c, &again, 0.5), map);
        }
    }
}
