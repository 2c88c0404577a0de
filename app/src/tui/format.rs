//! Short number, step and duration formats for a terminal cell budget.

/// 4_070_000 → "4.07M", 245_760 → "245.8k", 999 → "999".
pub fn si(n: f64) -> String {
    let a = n.abs();
    let (v, unit) = if a >= 1e12 {
        (n / 1e12, "T")
    } else if a >= 1e9 {
        (n / 1e9, "G")
    } else if a >= 1e6 {
        (n / 1e6, "M")
    } else if a >= 1e3 {
        (n / 1e3, "k")
    } else {
        return format!("{}", n.round());
    };
    let digits = if v.abs() >= 100.0 {
        1
    } else if v.abs() >= 10.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.prec$}", prec = (digits - 1).max(0) as usize);
    // Drop a useless trailing ".0" ("12.0k" → "12k") but keep meaningful decimals.
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{unit}")
}

/// 1247442 → "1,247,442".
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A step number for an axis: exact below 10,000, then "12.5k", "1M".
pub fn step(x: f64) -> String {
    let r = x.round();
    if r.abs() < 10_000.0 {
        format!("{r}")
    } else {
        si(r)
    }
}

/// A metric value in about four significant digits: "3.521", "0.01", "1.2e-4", "2.4e5".
pub fn value(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.1e}");
        // "1.0e-4" → "1e-4"
        return s.replace(".0e", "e");
    }
    let mag = a.log10().floor() as i32;
    let decimals = (3 - mag).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Seconds → "45s", "17m20s", "3h05m", "2d04h".
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    let s = secs.round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(si(4_070_000.0), "4.07M");
        assert_eq!(si(245_760.0), "246k");
        assert_eq!(si(12_000.0), "12k");
        assert_eq!(si(1840.0), "1.84k");
        assert_eq!(si(999.0), "999");
        assert_eq!(grouped(1_247_442), "1,247,442");
        assert_eq!(grouped(12), "12");
        assert_eq!(step(2000.0), "2000");
        assert_eq!(step(1_000_000.0), "1M");
        assert_eq!(step(12_500.0), "12.5k");
        assert_eq!(value(3.52149), "3.521");
        assert_eq!(value(0.01), "0.01");
        assert_eq!(value(0.0001), "1e-4");
        assert_eq!(value(12.0), "12");
        assert_eq!(value(-2.5), "-2.5");
        assert_eq!(duration(45.2), "45s");
        assert_eq!(duration(1040.0), "17m20s");
        assert_eq!(duration(3.0 * 3600.0 + 300.0), "3h05m");
    }
}
