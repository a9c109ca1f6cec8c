//! kubectl's table output: columns, ages, and a pod's STATUS word.

use ironpod_kube::pod::PodStatus;
use ironpod_kube::Stored;

/// Prints rows as kubectl does: columns padded to their widest cell, three spaces apart.
pub fn print(header: &[&str], rows: &[Vec<String>], with_header: bool) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    if with_header {
        println!("{}", line(header.iter().map(|h| h.to_string()).collect()));
    }
    for r in rows {
        println!("{}", line(r.clone()));
    }
}

/// kubectl's age of a time: `45s`, `3m20s`, `47m`, `3h20m`, `15h`, `3d5h`, `15d`, `2y`.
pub fn age(since: Option<&str>) -> String {
    let Some(t) = since.and_then(ironpod_images::time::parse_rfc3339) else {
        return "<unknown>".into();
    };
    let now =
        ironpod_images::time::parse_rfc3339(&ironpod_images::time::now_rfc3339()).unwrap_or(t);
    human(now.saturating_sub(t))
}

/// A duration in kubectl's short form.
pub fn human(s: u64) -> String {
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        },
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        },
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        },
        _ if d < 365 * 2 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

/// A pod's STATUS column, as kubectl works it out.
pub fn pod_status_word(p: &Stored) -> String {
    let s: PodStatus = p.status_as();
    let mut reason = if s.phase.is_empty() { "Pending".to_string() } else { s.phase.clone() };
    if let Some(r) = &s.reason {
        reason = r.clone();
    }
    let n_init = s.init_container_statuses.len();
    let mut initializing = false;
    for (i, c) in s.init_container_statuses.iter().enumerate() {
        if let Some(t) = &c.state.terminated {
            if t.exit_code == 0 {
                continue;
            }
            reason = match &t.reason {
                Some(r) if !r.is_empty() => format!("Init:{r}"),
                _ => format!("Init:ExitCode:{}", t.exit_code),
            };
        } else if let Some(r) = c
            .state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.clone())
            .filter(|r| r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{n_init}");
        }
        initializing = true;
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in s.container_statuses.iter().rev() {
            if let Some(r) =
                c.state.waiting.as_ref().and_then(|w| w.reason.clone()).filter(|r| !r.is_empty())
            {
                reason = r;
            } else if let Some(t) = &c.state.terminated {
                reason = match &t.reason {
                    Some(r) if !r.is_empty() => r.clone(),
                    _ => format!("ExitCode:{}", t.exit_code),
                };
            } else if c.ready && c.state.running.is_some() {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if p.deleting() {
        reason = "Terminating".into();
    }
    reason
}

/// A pod's READY column (`ready/total`) and RESTARTS.
pub fn pod_ready_restarts(p: &Stored) -> (String, i64) {
    let s: PodStatus = p.status_as();
    let total = match &p.object.body {
        ironpod_kube::Body::Pod(spec) => spec.containers.len(),
        _ => 0,
    };
    let ready = s.container_statuses.iter().filter(|c| c.ready).count();
    let restarts = s.container_statuses.iter().map(|c| c.restart_count).sum();
    (format!("{ready}/{total}"), restarts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_like_kubectl() {
        assert_eq!(human(45), "45s");
        assert_eq!(human(200), "3m20s");
        assert_eq!(human(180), "3m");
        assert_eq!(human(47 * 60), "47m");
        assert_eq!(human(3 * 3600 + 20 * 60), "3h20m");
        assert_eq!(human(15 * 3600), "15h");
        assert_eq!(human(3 * 86_400 + 5 * 3600), "3d5h");
        assert_eq!(human(15 * 86_400), "15d");
        assert_eq!(human(800 * 86_400), "2y");
    }
}
