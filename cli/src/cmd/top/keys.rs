//! The one key table of `cdsctl top`.
//!
//! Dispatch ([`action_for`]) and the help popup (`ui`) both read [`KEYS`],
//! so the help can never list a key the app does not act on, or miss one it
//! does. A key does the same thing to either source, but not in the same
//! way: on a local cluster `x` sends SIGKILL to a process and quitting
//! leaves the processes running, on a simulated one `x` is a simulated
//! crash and quitting ends the simulation; a binding says so in
//! [`Binding::sim_help`] where the wording differs.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Select the node above.
    Up,
    /// Select the node below.
    Down,
    /// Select the node whose id is the digit pressed.
    SelectId,
    /// `kv kill N` on the selected node (with `--sim`, a simulated crash).
    Kill,
    /// `kv restart N`.
    Restart,
    /// `kv pause N` (with `--sim`, a simulated stall).
    Pause,
    /// `kv resume N`.
    Resume,
    /// `kv partition N/others`: cut the selected node away from the rest.
    Isolate,
    /// `kv heal`.
    Heal,
    /// `kv transfer-leader N`.
    Transfer,
    /// `kv add-node`.
    AddNode,
    /// `kv remove-node N`.
    RemoveNode,
    /// `kv snapshot N`.
    Snapshot,
    /// Start or stop the background load (`kv bench`'s clients).
    Load,
    /// Show or hide the help popup.
    Help,
    /// Close the help popup.
    Close,
    /// Leave `top`: a local cluster keeps running, a simulated one ends.
    Quit,
}

/// A key as the table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A plain character.
    Char(char),
    /// Ctrl and a character.
    Ctrl(char),
    /// Any of the digits 1 to 9.
    Digit,
    /// The up arrow.
    ArrowUp,
    /// The down arrow.
    ArrowDown,
    /// Escape.
    Esc,
}

impl Key {
    /// How the help popup and the hint line write it.
    pub fn name(self) -> String {
        match self {
            Key::Char(c) => c.to_string(),
            Key::Ctrl(c) => format!("^{}", c.to_ascii_uppercase()),
            Key::Digit => "1-9".into(),
            Key::ArrowUp => "↑".into(),
            Key::ArrowDown => "↓".into(),
            Key::Esc => "Esc".into(),
        }
    }

    fn matches(self, ev: &KeyEvent) -> bool {
        let ctrl = ev.modifiers.contains(KeyModifiers::CONTROL);
        match (self, ev.code) {
            (Key::Char(k), KeyCode::Char(c)) => !ctrl && c == k,
            (Key::Ctrl(k), KeyCode::Char(c)) => ctrl && c.eq_ignore_ascii_case(&k),
            (Key::Digit, KeyCode::Char(c)) => !ctrl && ('1'..='9').contains(&c),
            (Key::ArrowUp, KeyCode::Up) | (Key::ArrowDown, KeyCode::Down) => true,
            (Key::Esc, KeyCode::Esc) => true,
            _ => false,
        }
    }
}

/// Whether the hint line shows a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// Only the help lists it.
    No,
    /// Whenever it fits (80 columns fit them all).
    Yes,
    /// When there is room left after the `Yes` ones.
    Wide,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    /// The keys that trigger it (the first is the one the hint line shows).
    pub keys: &'static [Key],
    /// A one-word label for the hint line.
    pub label: &'static str,
    /// What it does, for the help popup (watching a local cluster).
    pub help: &'static str,
    /// The help popup's wording for a simulated cluster, where it differs.
    pub sim_help: Option<&'static str>,
    /// What dispatch does.
    pub action: Action,
    /// Whether the bottom hint line shows it (there is room for few).
    pub hint: Hint,
}

/// Every key `top` acts on, in the order the help popup lists them.
pub const KEYS: &[Binding] = &[
    Binding {
        keys: &[Key::ArrowUp, Key::Char('k')],
        label: "up",
        help: "select the node above",
        sim_help: None,
        action: Action::Up,
        hint: Hint::No,
    },
    Binding {
        keys: &[Key::ArrowDown, Key::Char('j')],
        label: "down",
        help: "select the node below",
        sim_help: None,
        action: Action::Down,
        hint: Hint::No,
    },
    Binding {
        keys: &[Key::Digit],
        label: "select",
        help: "select node N",
        sim_help: None,
        action: Action::SelectId,
        hint: Hint::No,
    },
    Binding {
        keys: &[Key::Char('x')],
        label: "kill",
        help: "kill the node (SIGKILL: a crash)",
        sim_help: Some("crash the node (it keeps only its disk)"),
        action: Action::Kill,
        hint: Hint::Yes,
    },
    Binding {
        keys: &[Key::Char('r')],
        label: "restart",
        help: "restart the node (it must be down)",
        sim_help: None,
        action: Action::Restart,
        hint: Hint::Yes,
    },
    Binding {
        keys: &[Key::Char('p')],
        label: "pause",
        help: "pause the node (SIGSTOP)",
        sim_help: Some("stall the node (a simulated pause)"),
        action: Action::Pause,
        hint: Hint::Yes,
    },
    Binding {
        keys: &[Key::Char('u')],
        label: "resume",
        help: "resume the paused node (SIGCONT)",
        sim_help: Some("resume the stalled node"),
        action: Action::Resume,
        hint: Hint::Yes,
    },
    Binding {
        keys: &[Key::Char('i')],
        label: "isolate",
        help: "partition the node away from the others",
        sim_help: None,
        action: Action::Isolate,
        hint: Hint::Yes,
    },
    Binding {
        keys: &[Key::Char('h')],
        label: "heal",
        help: "heal every partition",
        sim_help: None,
        action: Action::Heal,
        hint: Hint::Yes,
    },
    Binding {
        keys: &[Key::Char('t')],
        label: "lead",
        help: "transfer leadership to the node",
        sim_help: None,
        action: Action::Transfer,
        hint: Hint::Yes,
    },
    Binding {
        keys: &[Key::Char('a')],
        label: "add",
        help: "add a new node as a voter",
        sim_help: None,
        action: Action::AddNode,
        hint: Hint::Wide,
    },
    Binding {
        keys: &[Key::Char('d')],
        label: "remove",
        help: "remove the node from the voters",
        sim_help: None,
        action: Action::RemoveNode,
        hint: Hint::Wide,
    },
    Binding {
        keys: &[Key::Char('s')],
        label: "snapshot",
        help: "make the node take a snapshot",
        sim_help: None,
        action: Action::Snapshot,
        hint: Hint::Wide,
    },
    Binding {
        keys: &[Key::Char('l')],
        label: "load",
        help: "start or stop the load generator",
        sim_help: None,
        action: Action::Load,
        hint: Hint::Yes,
    },
    Binding {
        keys: &[Key::Char('?')],
        label: "help",
        help: "show or hide this help",
        sim_help: None,
        action: Action::Help,
        hint: Hint::Yes,
    },
    Binding {
        keys: &[Key::Esc],
        label: "close",
        help: "close this help",
        sim_help: None,
        action: Action::Close,
        hint: Hint::No,
    },
    Binding {
        keys: &[Key::Char('q'), Key::Ctrl('c')],
        label: "quit",
        help: "quit (the cluster keeps running)",
        sim_help: Some("quit (ends the simulation)"),
        action: Action::Quit,
        hint: Hint::Yes,
    },
];

impl Binding {
    /// What the help popup says it does, for a simulated cluster (`sim`)
    /// or a local one.
    pub fn help_for(&self, sim: bool) -> &'static str {
        match self.sim_help {
            Some(h) if sim => h,
            _ => self.help,
        }
    }
}

/// The action bound to a key press, if any. Releases and repeats of a
/// held key are ignored, so holding `x` does not kill node after node.
pub fn action_for(ev: &KeyEvent) -> Option<Action> {
    if ev.kind != KeyEventKind::Press {
        return None;
    }
    KEYS.iter()
        .find(|b| b.keys.iter().any(|k| k.matches(ev)))
        .map(|b| b.action)
}

/// The keys of a binding as the help writes them: "↑ k".
pub fn keys_text(b: &Binding) -> String {
    let names: Vec<String> = b.keys.iter().map(|k| k.name()).collect();
    names.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode, mods: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, mods)
    }

    #[test]
    fn every_action_has_one_binding_and_keys_are_unique() {
        let mut seen = Vec::new();
        for b in KEYS {
            assert!(!b.keys.is_empty(), "{:?} has no key", b.action);
            assert!(
                KEYS.iter().filter(|o| o.action == b.action).count() == 1,
                "{:?} bound twice",
                b.action
            );
            for k in b.keys {
                assert!(!seen.contains(k), "{k:?} bound twice");
                seen.push(*k);
            }
        }
    }

    /// A simulated node is no process: no signal, and nothing outlives
    /// `top`.
    #[test]
    fn the_simulated_wording_names_no_signal_and_no_surviving_cluster() {
        for b in KEYS {
            let h = b.help_for(true);
            assert!(
                !h.contains("SIG") && !h.contains("keeps running"),
                "{:?}: {h}",
                b.action
            );
        }
        let quit = KEYS.iter().find(|b| b.action == Action::Quit).unwrap();
        assert_eq!(quit.help_for(false), "quit (the cluster keeps running)");
        assert_eq!(quit.help_for(true), "quit (ends the simulation)");
    }

    #[test]
    fn dispatch_reads_the_table() {
        let none = KeyModifiers::NONE;
        assert_eq!(
            action_for(&press(KeyCode::Char('x'), none)),
            Some(Action::Kill)
        );
        assert_eq!(
            action_for(&press(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(action_for(&press(KeyCode::Char('c'), none)), None);
        assert_eq!(
            action_for(&press(KeyCode::Char('3'), none)),
            Some(Action::SelectId)
        );
        assert_eq!(action_for(&press(KeyCode::Up, none)), Some(Action::Up));
        let mut release = press(KeyCode::Char('x'), none);
        release.kind = KeyEventKind::Release;
        assert_eq!(action_for(&release), None);
        // Every binding's own keys dispatch to it.
        for b in KEYS {
            for k in b.keys {
                let ev = match *k {
                    Key::Char(c) => press(KeyCode::Char(c), none),
                    Key::Ctrl(c) => press(KeyCode::Char(c), KeyModifiers::CONTROL),
                    Key::Digit => press(KeyCode::Char('5'), none),
                    Key::ArrowUp => press(KeyCode::Up, none),
                    Key::ArrowDown => press(KeyCode::Down, none),
                    Key::Esc => press(KeyCode::Esc, none),
                };
                assert_eq!(action_for(&ev), Some(b.action), "{k:?}");
            }
        }
    }
}
