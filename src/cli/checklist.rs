//! A checklist in the style of `linkerd check`: a line per check with a mark, and under each
//! failure what is wrong and how to fix it; or the same as JSON for scripts.

use serde::Serialize;

use super::Output;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    Pass,
    /// Worth knowing, not a failure (exit status 0).
    Warn,
    Fail,
    /// Could not be checked because an earlier check failed.
    Skip,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The section, e.g. `webhook`.
    pub category: &'static str,
    /// What is checked, as a statement that holds when it passes.
    pub name: String,
    pub mark: Mark,
    /// What was found (failures and warnings: what is wrong).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Checklist {
    pub checks: Vec<Check>,
}

impl Checklist {
    pub fn pass(&mut self, category: &'static str, name: impl Into<String>) {
        self.push(category, name, Mark::Pass, None, None);
    }

    pub fn pass_with(&mut self, category: &'static str, name: impl Into<String>, detail: String) {
        self.push(category, name, Mark::Pass, Some(detail), None);
    }

    pub fn fail(
        &mut self,
        category: &'static str,
        name: impl Into<String>,
        detail: String,
        fix: String,
    ) {
        self.push(category, name, Mark::Fail, Some(detail), Some(fix));
    }

    pub fn warn(
        &mut self,
        category: &'static str,
        name: impl Into<String>,
        detail: String,
        fix: String,
    ) {
        self.push(category, name, Mark::Warn, Some(detail), Some(fix));
    }

    pub fn skip(&mut self, category: &'static str, name: impl Into<String>, why: &str) {
        self.push(category, name, Mark::Skip, Some(why.to_string()), None);
    }

    fn push(
        &mut self,
        category: &'static str,
        name: impl Into<String>,
        mark: Mark,
        detail: Option<String>,
        fix: Option<String>,
    ) {
        self.checks.push(Check {
            category,
            name: name.into(),
            mark,
            detail,
            fix,
        });
    }

    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| c.mark == Mark::Fail).count()
    }

    /// The exit status: 0 only when nothing failed.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.failed() > 0)
    }

    pub fn render(&self, output: Output) -> String {
        match output {
            Output::Json => {
                let doc = serde_json::json!({
                    "checks": self.checks,
                    "failed": self.failed(),
                    "passed": self.failed() == 0,
                });
                serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
            }
            Output::Text => self.text(),
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let mut category = "";
        for c in &self.checks {
            if c.category != category {
                category = c.category;
                out.push_str(&format!("\n{category}\n{}\n", "-".repeat(category.len())));
            }
            let mark = match c.mark {
                Mark::Pass => "√",
                Mark::Warn => "‼",
                Mark::Fail => "×",
                Mark::Skip => "-",
            };
            out.push_str(&format!("{mark} {}\n", c.name));
            for line in c.detail.iter().flat_map(|d| d.lines()) {
                out.push_str(&format!("    {line}\n"));
            }
            if let Some(fix) = &c.fix {
                out.push_str(&format!("    fix: {fix}\n"));
            }
        }
        let status = match self.failed() {
            0 => "Status check results are √".to_string(),
            n => format!("Status check results are × ({n} failed)"),
        };
        out.push_str(&format!("\n{status}\n"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_set_the_exit_status_and_show_their_fix() {
        let mut list = Checklist::default();
        list.pass("api", "the API server answers");
        list.warn("pods", "w", "odd".into(), "look".into());
        assert_eq!(list.exit_code(), 0, "a warning is not a failure");
        list.fail(
            "webhook",
            "caBundle",
            "it does not verify".into(),
            "rotate".into(),
        );
        list.skip(
            "webhook",
            "end to end",
            "the webhook configuration is missing",
        );
        assert_eq!(list.exit_code(), 1);
        let text = list.render(Output::Text);
        for want in [
            "√ the API server answers",
            "× caBundle",
            "    it does not verify",
            "    fix: rotate",
            "(1 failed)",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        let json: serde_json::Value = serde_json::from_str(&list.render(Output::Json)).unwrap();
        assert_eq!(json["failed"], 1);
        assert_eq!(json["checks"][2]["mark"], "fail");
        assert_eq!(json["checks"][2]["fix"], "rotate");
    }
}
