//! IPv4/IPv6 dual-stack rules of the API server, as kube-apiserver 1.32 has them: CIDRs of
//! either family with their addresses as offsets, the Service CIDRs of
//! `--service-cluster-ip-range` (one per family, the first is the primary), and the
//! `ipFamilyPolicy` / `ipFamilies` / `clusterIPs` defaulting and validation done before a
//! Service's addresses are allocated (`initIPFamilyFields`,
//! `ValidateServiceClusterIPsRelatedFields`). Pure: no I/O.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value, json};

use crate::resources::FieldError;
use crate::resources::validation::Errors;

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `IPv4`.
    V4,
    /// `IPv6`.
    V6,
}

impl Family {
    /// The API name (`IPv4`, `IPv6`).
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The family an API name stands for.
    pub fn parse(s: &str) -> Option<Family> {
        match s {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }

    /// The family of an address.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The family of an address written as text, when it is one.
    pub fn of_str(ip: &str) -> Option<Family> {
        ip.parse::<IpAddr>().ok().map(Family::of)
    }

    /// The other family.
    pub fn other(self) -> Family {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }

    /// Address bits (32, 128).
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// A CIDR of either family, its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: IpAddr,
    prefix: u8,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x:y::/n`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not a CIDR");
        let (ip, len) = s.trim().split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if prefix > Family::of(ip).bits() {
            return Err(bad());
        }
        let cidr = Cidr { base: ip, prefix };
        Ok(Cidr {
            base: cidr.nth(0),
            prefix,
        })
    }

    /// The family.
    pub fn family(&self) -> Family {
        Family::of(self.base)
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network address.
    pub fn base(&self) -> IpAddr {
        self.base
    }

    /// log2 of the number of addresses.
    pub fn host_bits(&self) -> u32 {
        u32::from(self.family().bits() - self.prefix)
    }

    /// The highest offset inside the CIDR.
    pub fn last_offset(&self) -> u128 {
        match self.host_bits() {
            128.. => u128::MAX,
            n => (1u128 << n) - 1,
        }
    }

    fn mask(&self) -> u128 {
        let all = match self.family() {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        };
        all & !self.last_offset()
    }

    /// The address at `offset` from the network address (taken modulo the CIDR's size).
    pub fn nth(&self, offset: u128) -> IpAddr {
        let v = (to_u128(self.base) & self.mask()) | (offset & self.last_offset());
        match self.family() {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX))),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
        }
    }

    /// The offset of `ip` when it lies inside.
    pub fn offset(&self, ip: IpAddr) -> Option<u128> {
        if Family::of(ip) != self.family() {
            return None;
        }
        let v = to_u128(ip);
        (v & self.mask() == to_u128(self.base)).then(|| v & self.last_offset())
    }

    /// Whether a Service may hold `ip`: inside, neither the network address nor (IPv4) the
    /// broadcast address.
    pub fn allocatable(&self, ip: IpAddr) -> bool {
        match self.offset(ip) {
            None | Some(0) => false,
            Some(off) => self.family() == Family::V6 || off < self.last_offset(),
        }
    }

    /// The first address from offset 2 on (offset 1 is the `kubernetes` Service's in the
    /// primary range) that `used` does not hold. Scans at most `used.len() + 1` addresses,
    /// so an IPv6 range of any size needs no bitmap.
    pub fn first_free(&self, used: &HashSet<IpAddr>) -> Option<IpAddr> {
        let last = match self.family() {
            Family::V4 => self.last_offset().checked_sub(1)?,
            Family::V6 => self.last_offset(),
        };
        let mut off = 2u128;
        while off <= last {
            let ip = self.nth(off);
            if !used.contains(&ip) {
                return Some(ip);
            }
            off += 1;
        }
        None
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// kube-apiserver 1.32 keeps at most 2^20 addresses per IPv4 Service range.
const MAX_V4_SERVICE_BITS: u32 = 20;

/// The Service CIDRs: one or two, of different families, the primary first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCidrs(Vec<Cidr>);

impl ServiceCidrs {
    /// Parses `--service-cluster-ip-range` (`10.96.0.0/12,fd00:10:96::/108`) with
    /// kube-apiserver's checks and messages.
    pub fn parse(s: &str) -> Result<ServiceCidrs, String> {
        const FLAG: &str = "--service-cluster-ip-range";
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.iter().all(|p| p.is_empty()) {
            return Err(format!("{FLAG} must contain at least one valid cidr"));
        }
        if parts.len() > 2 {
            return Err(format!("{FLAG} must not contain more than two entries"));
        }
        let mut cidrs = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let cidr =
                Cidr::parse(p).map_err(|_| format!("{FLAG}[{i}] {p:?} is not a valid cidr"))?;
            let name = if i == 0 {
                FLAG.to_string()
            } else {
                format!("{FLAG}[{i}]")
            };
            let bits = cidr.host_bits();
            if cidr.family() == Family::V4 && bits > MAX_V4_SERVICE_BITS {
                return Err(format!(
                    "specified {name} is too large; for 32-bit addresses, the mask must be >= {}",
                    32 - MAX_V4_SERVICE_BITS
                ));
            }
            // room for the network address, the kubernetes Service and one more
            let min_bits = if cidr.family() == Family::V4 { 2 } else { 1 };
            if bits < min_bits {
                return Err(format!("specified {name} {cidr} is too small"));
            }
            cidrs.push(cidr);
        }
        if cidrs.len() == 2 && cidrs[0].family() == cidrs[1].family() {
            return Err(format!(
                "{FLAG}[0] and {FLAG}[1] must be of different IP family"
            ));
        }
        Ok(ServiceCidrs(cidrs))
    }

    /// The primary range (the first).
    pub fn primary(&self) -> &Cidr {
        &self.0[0]
    }

    /// The range of `family`, when configured.
    pub fn get(&self, family: Family) -> Option<&Cidr> {
        self.0.iter().find(|c| c.family() == family)
    }

    /// Whether both families are configured.
    pub fn is_dual(&self) -> bool {
        self.0.len() == 2
    }
}

impl fmt::Display for ServiceCidrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Cidr::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Go's `%#v` of a `[]string` (`[]string{"10.96.0.5", "fd00::5"}`), as upstream messages
/// show `clusterIPs`.
pub fn go_strings(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", items.join(", "))
}

const POLICIES: [&str; 3] = ["PreferDualStack", "RequireDualStack", "SingleStack"];

fn strings(spec: &Map<String, Value>, key: &str) -> Vec<String> {
    spec.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

fn str_of<'a>(spec: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    spec.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn set_strings(spec: &mut Map<String, Value>, key: &str, list: &[String]) {
    spec.insert(key.into(), json!(list));
}

/// `clusterIP` and `clusterIPs` in step, as the apiserver's strategy normalises them: one
/// given fills in the other.
fn normalize_cluster_ips(spec: &mut Map<String, Value>) {
    let ips = strings(spec, "clusterIPs");
    match (str_of(spec, "clusterIP").map(str::to_string), ips.first()) {
        (Some(ip), None) => set_strings(spec, "clusterIPs", &[ip]),
        (None, Some(first)) if !first.is_empty() => {
            let first = first.clone();
            spec.insert("clusterIP".into(), json!(first));
        }
        _ => {}
    }
}

/// `ValidateServiceClusterIPsRelatedFields`: the fields on their own.
fn validate_related(spec: &Map<String, Value>, errs: &mut Errors) {
    let ips = strings(spec, "clusterIPs");
    match str_of(spec, "clusterIP") {
        Some(ip) => {
            if ips.is_empty() {
                errs.required("spec.clusterIPs");
            } else if ips[0] != ip {
                errs.push(
                    "FieldValueInvalid",
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: {}: first value must match `clusterIP`",
                        go_strings(&ips)
                    ),
                );
            }
        }
        None if !ips.is_empty() => errs.push(
            "FieldValueInvalid",
            "spec.clusterIPs",
            format!(
                "Invalid value: {}: must be empty when `clusterIP` is not specified",
                go_strings(&ips)
            ),
        ),
        None => {}
    }
    let mut seen = Vec::new();
    for (i, fam) in strings(spec, "ipFamilies").iter().enumerate() {
        let field = format!("spec.ipFamilies[{i}]");
        if Family::parse(fam).is_none() {
            errs.not_supported(&field, &json!(fam), &["IPv4", "IPv6"]);
        }
        if seen.contains(fam) {
            errs.duplicate(&field, &json!(fam));
        }
        seen.push(fam.clone());
    }
    if let Some(p) = spec.get("ipFamilyPolicy").and_then(Value::as_str)
        && !POLICIES.contains(&p)
    {
        errs.not_supported("spec.ipFamilyPolicy", &json!(p), &POLICIES);
    }
    let mut bad_ip = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                bad_ip = true;
                errs.push(
                    "FieldValueInvalid",
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: {}: 'None' must be the first and only value",
                        go_strings(&ips)
                    ),
                );
            }
            continue;
        }
        if ip.parse::<IpAddr>().is_err() {
            bad_ip = true;
            errs.invalid(
                &format!("spec.clusterIPs[{i}]"),
                &json!(ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            );
        }
    }
    if ips.len() > 2 {
        errs.push(
            "FieldValueInvalid",
            "spec.clusterIPs",
            format!(
                "Invalid value: {}: may only hold up to 2 values",
                go_strings(&ips)
            ),
        );
    }
    if bad_ip {
        return;
    }
    if ips.len() == 2 && Family::of_str(&ips[0]) == Family::of_str(&ips[1]) {
        errs.push(
            "FieldValueInvalid",
            "spec.clusterIPs",
            format!(
                "Invalid value: {}: may specify no more than one IP for each IP family",
                go_strings(&ips)
            ),
        );
    }
    let headless = ips.len() == 1 && ips[0] == "None";
    if !headless {
        for (i, (ip, fam)) in ips.iter().zip(strings(spec, "ipFamilies")).enumerate() {
            if let (Some(want), Some(got)) = (Family::parse(&fam), Family::of_str(ip))
                && want != got
            {
                errs.invalid(
                    &format!("spec.clusterIPs[{i}]"),
                    &json!(ip),
                    &format!(
                        "expected an {} value as indicated by `ipFamilies[{i}]`",
                        want.name()
                    ),
                );
            }
        }
    }
}

/// `initIPFamilyFields`: defaults `ipFamilyPolicy` and `ipFamilies` of a Service spec (not
/// ExternalName) for a cluster with the Service ranges `cluster`, checks them against the
/// cluster and, on update (`old`), handles the upgrade to and downgrade from dual-stack.
/// Also keeps `clusterIP` and `clusterIPs` in step.
pub fn init_ip_families(
    spec: &mut Map<String, Value>,
    old: Option<&Map<String, Value>>,
    cluster: &ServiceCidrs,
) -> Result<(), Vec<FieldError>> {
    normalize_cluster_ips(spec);
    let selectorless = spec
        .get("selector")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    let headless = str_of(spec, "clusterIP") == Some("None");
    if spec.get("ipFamilyPolicy").is_none_or(Value::is_null) {
        let policy = match old.and_then(|o| str_of(o, "ipFamilyPolicy")) {
            Some(p) => p,
            None if headless && selectorless => "RequireDualStack",
            None => "SingleStack",
        };
        spec.insert("ipFamilyPolicy".into(), json!(policy));
    }
    let mut errs = Errors::default();
    validate_related(spec, &mut errs);
    if !errs.0.is_empty() {
        return Err(errs.0);
    }
    let policy = str_of(spec, "ipFamilyPolicy")
        .unwrap_or("SingleStack")
        .to_string();
    let policy_value = json!(policy);
    let mut ips = strings(spec, "clusterIPs");
    let mut families = strings(spec, "ipFamilies");
    if let Some(old) = old {
        let old_ips = strings(old, "clusterIPs");
        let old_families = strings(old, "ipFamilies");
        if policy == "SingleStack" {
            if ips == old_ips && ips.len() > 1 {
                ips.truncate(1);
            }
            if families == old_families && families.len() > 1 {
                families.truncate(1);
            }
        } else {
            if ips.len() < old_ips.len() && !ips.is_empty() {
                errs.invalid(
                    "spec.ipFamilyPolicy",
                    &policy_value,
                    "must be 'SingleStack' to release the secondary cluster IP",
                );
            }
            if families.len() < old_families.len() && !families.is_empty() {
                errs.invalid(
                    "spec.ipFamilyPolicy",
                    &policy_value,
                    "must be 'SingleStack' to release the secondary IP family",
                );
            }
        }
    }
    if policy == "SingleStack" {
        if ips.len() == 2 {
            errs.invalid(
                "spec.ipFamilyPolicy",
                &policy_value,
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            );
        }
        if families.len() == 2 {
            errs.invalid(
                "spec.ipFamilyPolicy",
                &policy_value,
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            );
        }
    }
    for (i, ip) in ips.iter().enumerate() {
        if ip == "None" {
            break;
        }
        let Some(fam) = Family::of_str(ip) else {
            continue;
        };
        if i >= families.len() {
            if cluster.get(fam).is_none() {
                errs.push(
                    "FieldValueInvalid",
                    &format!("spec.clusterIPs[{i}]"),
                    format!(
                        "Invalid value: {}: {} is not configured on this cluster",
                        go_strings(&ips),
                        fam.name()
                    ),
                );
            } else {
                families.push(fam.name().to_string());
            }
        }
    }
    if !errs.0.is_empty() {
        return Err(errs.0);
    }
    let primary = cluster.primary().family();
    if headless && selectorless {
        if families.is_empty() {
            families.push(primary.name().to_string());
        }
        if families.len() < 2
            && policy != "SingleStack"
            && let Some(f) = Family::parse(&families[0])
        {
            families.push(f.other().name().to_string());
        }
    } else {
        if policy == "RequireDualStack" && !cluster.is_dual() {
            errs.invalid(
                "spec.ipFamilyPolicy",
                &policy_value,
                "this cluster is not configured for dual-stack services",
            );
        }
        for (i, fam) in families.iter().enumerate() {
            if Family::parse(fam).and_then(|f| cluster.get(f)).is_none() {
                errs.invalid(
                    &format!("spec.ipFamilies[{i}]"),
                    &json!(fam),
                    "not configured on this cluster",
                );
            }
        }
        if !errs.0.is_empty() {
            return Err(errs.0);
        }
        if families.is_empty() {
            families.push(primary.name().to_string());
        }
        if policy != "SingleStack"
            && families.len() == 1
            && cluster.is_dual()
            && let Some(f) = Family::parse(&families[0])
        {
            families.push(f.other().name().to_string());
        }
    }
    set_strings(spec, "ipFamilies", &families);
    if !ips.is_empty() {
        spec.insert("clusterIP".into(), json!(ips[0]));
        set_strings(spec, "clusterIPs", &ips);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_arithmetic_in_both_families() {
        let v4 = Cidr::parse("10.96.7.9/12").unwrap();
        assert_eq!(v4.to_string(), "10.96.0.0/12");
        assert_eq!(v4.nth(1).to_string(), "10.96.0.1");
        assert_eq!(v4.last_offset(), (1 << 20) - 1);
        let v6 = Cidr::parse("fd00:10:96::5/64").unwrap();
        assert_eq!(v6.to_string(), "fd00:10:96::/64");
        assert_eq!(v6.nth(0x1_0000).to_string(), "fd00:10:96::1:0");
        let all6 = Cidr::parse("::/0").unwrap();
        assert_eq!(all6.last_offset(), u128::MAX);
        let cases: [(&Cidr, &str, bool); 9] = [
            (&v4, "10.96.0.0", false),
            (&v4, "10.96.0.1", true),
            (&v4, "10.111.255.254", true),
            (&v4, "10.111.255.255", false),
            (&v4, "10.112.0.1", false),
            (&v4, "fd00:10:96::1", false),
            (&v6, "fd00:10:96::", false),
            (&v6, "fd00:10:96:0:ffff:ffff:ffff:ffff", true),
            (&v6, "fd00:10:97::1", false),
        ];
        for (cidr, ip, want) in cases {
            assert_eq!(cidr.allocatable(ip.parse().unwrap()), want, "{cidr} {ip}");
        }
        for bad in ["10.0.0.0", "10.0.0.0/33", "fd00::/129", "x/8"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn first_free_scans_past_used_without_a_bitmap() {
        let v6 = Cidr::parse("fd00::/64").unwrap();
        let mut used = HashSet::new();
        assert_eq!(v6.first_free(&used).unwrap().to_string(), "fd00::2");
        for off in 2..1000u128 {
            used.insert(v6.nth(off));
        }
        assert_eq!(v6.first_free(&used).unwrap().to_string(), "fd00::3e8");
        let tiny = Cidr::parse("10.0.0.0/30").unwrap();
        let mut used = HashSet::new();
        assert_eq!(tiny.first_free(&used).unwrap().to_string(), "10.0.0.2");
        used.insert(tiny.nth(2));
        assert_eq!(tiny.first_free(&used), None);
    }

    #[test]
    fn service_cluster_ip_range_flag() {
        let ok: [(&str, &str, bool); 4] = [
            ("10.96.0.0/12", "10.96.0.0/12", false),
            ("fd00:10:96::/64", "fd00:10:96::/64", false),
            (
                "10.96.0.0/12,fd00:10:96::/108",
                "10.96.0.0/12,fd00:10:96::/108",
                true,
            ),
            ("fd00::/48, 10.0.0.0/16", "fd00::/48,10.0.0.0/16", true),
        ];
        for (flag, shown, dual) in ok {
            let c = ServiceCidrs::parse(flag).unwrap();
            assert_eq!(
                (c.to_string().as_str(), c.is_dual()),
                (shown, dual),
                "{flag}"
            );
        }
        let v6_first = ServiceCidrs::parse("fd00::/48,10.0.0.0/16").unwrap();
        assert_eq!(v6_first.primary().family(), Family::V6);
        assert_eq!(v6_first.get(Family::V4).unwrap().to_string(), "10.0.0.0/16");
        let bad = [
            (
                "",
                "--service-cluster-ip-range must contain at least one valid cidr",
            ),
            (
                "10.0.0.0/16,fd00::/64,10.1.0.0/16",
                "--service-cluster-ip-range must not contain more than two entries",
            ),
            (
                "10.0.0.0/16,10.1.0.0/16",
                "--service-cluster-ip-range[0] and --service-cluster-ip-range[1] must be of different IP family",
            ),
            (
                "fd00::/64,fd01::/64",
                "--service-cluster-ip-range[0] and --service-cluster-ip-range[1] must be of different IP family",
            ),
            (
                "10.0.0.0/8",
                "specified --service-cluster-ip-range is too large; for 32-bit addresses, the mask must be >= 12",
            ),
            (
                "fd00::/64,10.0.0.0/8",
                "specified --service-cluster-ip-range[1] is too large; for 32-bit addresses, the mask must be >= 12",
            ),
            (
                "10.0.0.0/16,nope",
                "--service-cluster-ip-range[1] \"nope\" is not a valid cidr",
            ),
        ];
        for (flag, want) in bad {
            assert_eq!(ServiceCidrs::parse(flag).unwrap_err(), want, "{flag}");
        }
    }

    fn run(
        cluster: &str,
        spec: Value,
        old: Option<Value>,
    ) -> Result<Map<String, Value>, Vec<String>> {
        let cluster = ServiceCidrs::parse(cluster).unwrap();
        let mut spec = spec.as_object().unwrap().clone();
        let old = old.map(|o| o.as_object().unwrap().clone());
        init_ip_families(&mut spec, old.as_ref(), &cluster)
            .map(|()| spec)
            .map_err(|e| {
                e.into_iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect()
            })
    }

    const V4: &str = "10.96.0.0/12";
    const V6: &str = "fd00:10:96::/108";
    const DUAL: &str = "10.96.0.0/12,fd00:10:96::/108";
    const DUAL6: &str = "fd00:10:96::/108,10.96.0.0/12";

    #[test]
    fn policy_and_families_by_cluster() {
        let sel = json!({"app": "web"});
        // (cluster, policy, ipFamilies given, headless, selector) → (policy, families)
        #[allow(clippy::type_complexity)]
        #[rustfmt::skip]
        let cases: Vec<(&str, Option<&str>, Value, bool, bool, &str, Vec<&str>)> = vec![
            (V4, None, json!(null), false, true, "SingleStack", vec!["IPv4"]),
            (V6, None, json!(null), false, true, "SingleStack", vec!["IPv6"]),
            (DUAL, None, json!(null), false, true, "SingleStack", vec!["IPv4"]),
            (DUAL6, None, json!(null), false, true, "SingleStack", vec!["IPv6"]),
            (V4, Some("SingleStack"), json!(null), false, true, "SingleStack", vec!["IPv4"]),
            (DUAL, Some("SingleStack"), json!(["IPv6"]), false, true, "SingleStack", vec!["IPv6"]),
            (V4, Some("PreferDualStack"), json!(null), false, true, "PreferDualStack", vec!["IPv4"]),
            (V6, Some("PreferDualStack"), json!(null), false, true, "PreferDualStack", vec!["IPv6"]),
            (DUAL, Some("PreferDualStack"), json!(null), false, true, "PreferDualStack", vec!["IPv4", "IPv6"]),
            (DUAL6, Some("PreferDualStack"), json!(null), false, true, "PreferDualStack", vec!["IPv6", "IPv4"]),
            (DUAL, Some("PreferDualStack"), json!(["IPv6"]), false, true, "PreferDualStack", vec!["IPv6", "IPv4"]),
            (DUAL, Some("RequireDualStack"), json!(null), false, true, "RequireDualStack", vec!["IPv4", "IPv6"]),
            (DUAL6, Some("RequireDualStack"), json!(null), false, true, "RequireDualStack", vec!["IPv6", "IPv4"]),
            (DUAL, Some("RequireDualStack"), json!(["IPv6", "IPv4"]), false, true, "RequireDualStack", vec!["IPv6", "IPv4"]),
            // headless with a selector: as any Service
            (V4, None, json!(null), true, true, "SingleStack", vec!["IPv4"]),
            (DUAL, Some("PreferDualStack"), json!(null), true, true, "PreferDualStack", vec!["IPv4", "IPv6"]),
            // headless without a selector: RequireDualStack by default, both families even
            // on a single-stack cluster
            (V4, None, json!(null), true, false, "RequireDualStack", vec!["IPv4", "IPv6"]),
            (V6, None, json!(null), true, false, "RequireDualStack", vec!["IPv6", "IPv4"]),
            (DUAL, None, json!(null), true, false, "RequireDualStack", vec!["IPv4", "IPv6"]),
            (V4, Some("SingleStack"), json!(null), true, false, "SingleStack", vec!["IPv4"]),
            (V4, Some("PreferDualStack"), json!(null), true, false, "PreferDualStack", vec!["IPv4", "IPv6"]),
        ];
        for (cluster, policy, families, headless, with_selector, want_policy, want_families) in
            cases
        {
            let mut spec = json!({"ports": [{"port": 80}]});
            if let Some(p) = policy {
                spec["ipFamilyPolicy"] = json!(p);
            }
            if !families.is_null() {
                spec["ipFamilies"] = families.clone();
            }
            if headless {
                spec["clusterIP"] = json!("None");
            }
            if with_selector {
                spec["selector"] = sel.clone();
            }
            let ctx = format!(
                "{cluster} {policy:?} {families} headless={headless} selector={with_selector}"
            );
            let got = run(cluster, spec, None).unwrap_or_else(|e| panic!("{ctx}: {e:?}"));
            assert_eq!(got["ipFamilyPolicy"], json!(want_policy), "{ctx}");
            assert_eq!(got["ipFamilies"], json!(want_families), "{ctx}");
            if headless {
                assert_eq!(got["clusterIPs"], json!(["None"]), "{ctx}");
            }
        }
    }

    #[test]
    fn errors_as_upstream_words_them() {
        let cases: Vec<(&str, Value, Vec<&str>)> = vec![
            (
                V4,
                json!({"ipFamilyPolicy": "RequireDualStack", "selector": {"a": "b"}}),
                vec![
                    "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services",
                ],
            ),
            (
                V6,
                json!({"ipFamilyPolicy": "RequireDualStack"}),
                vec![
                    "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services",
                ],
            ),
            (
                V4,
                json!({"ipFamilies": ["IPv6"]}),
                vec!["spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster"],
            ),
            (
                DUAL,
                json!({"ipFamilies": ["IPv4", "IPv6"]}),
                vec![
                    "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
                ],
            ),
            (
                DUAL,
                json!({"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5", "fd00:10:96::5"]}),
                vec![
                    "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
                ],
            ),
            (
                DUAL,
                json!({"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.6"]}),
                vec![
                    "spec.clusterIPs: Invalid value: []string{\"10.96.0.6\"}: first value must match `clusterIP`",
                ],
            ),
            (
                DUAL,
                json!({"ipFamilyPolicy": "PreferDualStack", "clusterIPs": ["10.96.0.5", "10.96.0.6"]}),
                vec![
                    "spec.clusterIPs: Invalid value: []string{\"10.96.0.5\", \"10.96.0.6\"}: may specify no more than one IP for each IP family",
                ],
            ),
            (
                DUAL,
                json!({"ipFamilyPolicy": "PreferDualStack", "clusterIPs": ["10.96.0.5", "fd00:10:96::5", "10.96.0.6"]}),
                vec![
                    "spec.clusterIPs: Invalid value: []string{\"10.96.0.5\", \"fd00:10:96::5\", \"10.96.0.6\"}: may only hold up to 2 values",
                ],
            ),
            (
                DUAL,
                json!({"clusterIP": "fd00:10:96::5", "ipFamilies": ["IPv4"]}),
                vec![
                    "spec.clusterIPs[0]: Invalid value: \"fd00:10:96::5\": expected an IPv4 value as indicated by `ipFamilies[0]`",
                ],
            ),
            (
                V4,
                json!({"clusterIP": "fd00:10:96::5"}),
                vec![
                    "spec.clusterIPs[0]: Invalid value: []string{\"fd00:10:96::5\"}: IPv6 is not configured on this cluster",
                ],
            ),
            (
                DUAL,
                json!({"ipFamilyPolicy": "DualStack"}),
                vec![
                    "spec.ipFamilyPolicy: Unsupported value: \"DualStack\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\"",
                ],
            ),
            (
                DUAL,
                json!({"ipFamilies": ["IPv4", "IPv4"], "ipFamilyPolicy": "PreferDualStack"}),
                vec!["spec.ipFamilies[1]: Duplicate value: \"IPv4\""],
            ),
            (
                DUAL,
                json!({"ipFamilies": ["IPv5"]}),
                vec![
                    "spec.ipFamilies[0]: Unsupported value: \"IPv5\": supported values: \"IPv4\", \"IPv6\"",
                ],
            ),
            (
                DUAL,
                json!({"clusterIP": "None", "clusterIPs": ["None", "10.96.0.5"]}),
                vec![
                    "spec.clusterIPs: Invalid value: []string{\"None\", \"10.96.0.5\"}: 'None' must be the first and only value",
                ],
            ),
        ];
        for (cluster, spec, want) in cases {
            let ctx = format!("{cluster} {spec}");
            assert_eq!(run(cluster, spec, None).unwrap_err(), want, "{ctx}");
        }
    }

    #[test]
    fn cluster_ips_infer_families_and_stay_in_step() {
        let got = run(
            DUAL,
            json!({"ipFamilyPolicy": "PreferDualStack", "clusterIPs": ["fd00:10:96::5", "10.96.0.5"]}),
            None,
        )
        .unwrap();
        assert_eq!(got["clusterIP"], "fd00:10:96::5");
        assert_eq!(got["ipFamilies"], json!(["IPv6", "IPv4"]));
        let got = run(DUAL, json!({"clusterIP": "fd00:10:96::5"}), None).unwrap();
        assert_eq!(got["clusterIPs"], json!(["fd00:10:96::5"]));
        assert_eq!(got["ipFamilies"], json!(["IPv6"]));
    }

    #[test]
    fn upgrade_and_downgrade_on_update() {
        let old = json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"],
                         "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"]});
        // SingleStack → PreferDualStack: the second family is added (its IP is allocated).
        let mut up = old.clone();
        up["ipFamilyPolicy"] = json!("PreferDualStack");
        let got = run(DUAL, up.clone(), Some(old.clone())).unwrap();
        assert_eq!(got["ipFamilies"], json!(["IPv4", "IPv6"]));
        assert_eq!(got["clusterIPs"], json!(["10.96.0.5"]));
        // On a single-stack cluster PreferDualStack stays single.
        let got = run(V4, up, Some(old.clone())).unwrap();
        assert_eq!(got["ipFamilies"], json!(["IPv4"]));
        // A patch without a policy keeps the old one.
        let mut no_policy = old.clone();
        no_policy.as_object_mut().unwrap().remove("ipFamilyPolicy");
        let dual_old = json!({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"],
                              "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5", "fd00:10:96::5"]});
        let mut same = dual_old.clone();
        same.as_object_mut().unwrap().remove("ipFamilyPolicy");
        let got = run(DUAL, same, Some(dual_old.clone())).unwrap();
        assert_eq!(got["ipFamilyPolicy"], "PreferDualStack");
        assert_eq!(got["clusterIPs"], json!(["10.96.0.5", "fd00:10:96::5"]));
        // PreferDualStack → SingleStack: the secondary IP and family are released.
        let mut down = dual_old.clone();
        down["ipFamilyPolicy"] = json!("SingleStack");
        let got = run(DUAL, down, Some(dual_old.clone())).unwrap();
        assert_eq!(got["ipFamilies"], json!(["IPv4"]));
        assert_eq!(got["clusterIPs"], json!(["10.96.0.5"]));
        assert_eq!(got["clusterIP"], "10.96.0.5");
        // Dropping the secondary without SingleStack is refused.
        let mut cut = dual_old.clone();
        cut["clusterIPs"] = json!(["10.96.0.5"]);
        cut["ipFamilies"] = json!(["IPv4"]);
        assert_eq!(
            run(DUAL, cut, Some(dual_old)).unwrap_err(),
            vec![
                "spec.ipFamilyPolicy: Invalid value: \"PreferDualStack\": must be 'SingleStack' to release the secondary cluster IP",
                "spec.ipFamilyPolicy: Invalid value: \"PreferDualStack\": must be 'SingleStack' to release the secondary IP family",
            ]
        );
        let got = run(DUAL, no_policy, Some(old)).unwrap();
        assert_eq!(got["ipFamilyPolicy"], "SingleStack");
    }
}
