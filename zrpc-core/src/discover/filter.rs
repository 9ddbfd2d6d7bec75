//! Keeping only the instances a client wants: by group, version and state.

use super::{Instance, InstanceState};

/// Which instances a client uses. The default keeps every instance that is up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Filter {
    /// Keep only this group, if set.
    pub group: Option<String>,
    /// Keep only this version, if set.
    pub version: Option<String>,
    /// Keep only instances in this state, if set (default: up).
    pub state: Option<InstanceState>,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter { group: None, version: None, state: Some(InstanceState::Up) }
    }
}

impl Filter {
    /// Keeps every instance, whatever its group, version and state.
    pub fn any() -> Filter {
        Filter { group: None, version: None, state: None }
    }

    /// Keeps only `group`.
    pub fn group(mut self, group: impl Into<String>) -> Filter {
        self.group = Some(group.into());
        self
    }

    /// Keeps only `version`.
    pub fn version(mut self, version: impl Into<String>) -> Filter {
        self.version = Some(version.into());
        self
    }

    /// Keeps only instances in `state`.
    pub fn state(mut self, state: InstanceState) -> Filter {
        self.state = Some(state);
        self
    }

    /// Whether `instance` passes.
    pub fn accepts(&self, instance: &Instance) -> bool {
        self.group.as_ref().is_none_or(|g| *g == instance.group)
            && self.version.as_ref().is_none_or(|v| *v == instance.version)
            && self.state.is_none_or(|s| s == instance.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_group_version_and_state() {
        let canary = Instance::new("a").with_group("canary").with_version("2");
        let draining = Instance::new("b").with_state(InstanceState::Draining);
        assert!(Filter::default().accepts(&canary));
        assert!(!Filter::default().accepts(&draining));
        assert!(Filter::any().accepts(&draining));
        assert!(Filter::default().group("canary").version("2").accepts(&canary));
        assert!(!Filter::default().group("stable").accepts(&canary));
        assert!(!Filter::default().version("1").accepts(&canary));
    }
}
