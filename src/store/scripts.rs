//! The Lua scripts of `lua/`, compiled into the binary with `lua/lib.lua` in front of each.
//! Invoked with EVALSHA; `redis::Script` reloads a script once on NOSCRIPT (after a Redis restart).
//! Redis reports an error of a script at a line of the whole text it ran (`user_script:N`);
//! [`readable_error`] names the file and its own line instead.

use redis::Script;

macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        /// One `redis::Script` per state transition.
        pub struct Scripts {
            $(pub $name: Script,)*
        }

        impl Default for Scripts {
            fn default() -> Self {
                Self::new()
            }
        }

        impl Scripts {
            pub fn new() -> Self {
                Self {
                    $($name: Script::new(&format!(
                        "{LIB}\n{}",
                        include_str!(concat!("../../lua/", stringify!($name), ".lua"))
                    )),)*
                }
            }

            pub fn all(&self) -> Vec<(&'static str, &Script)> {
                vec![$((stringify!($name), &self.$name),)*]
            }
        }
    };
}

const LIB: &str = include_str!("../../lua/lib.lua");

/// Where line `line` of a script as Redis ran it comes from: `lib.lua` or the script itself, and
/// the line there (the script's text follows `lib.lua` and one line break).
fn source_line(script: &str, line: usize) -> (String, usize) {
    let lib_lines = format!("{LIB}\n").lines().count();
    if line <= lib_lines {
        ("lua/lib.lua".into(), line)
    } else {
        (format!("lua/{script}.lua"), line - lib_lines)
    }
}

/// A Redis error message of script `script` with every `user_script:N` turned into the file and
/// line it comes from (`lua/dispatch_task.lua:42`).
pub fn readable_error(script: &str, message: &str) -> String {
    const MARK: &str = "user_script:";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let after = &rest[at + MARK.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse() {
            Ok(line) => {
                let (file, line) = source_line(script, line);
                out.push_str(&format!("{file}:{line}"));
            }
            Err(_) => out.push_str(MARK),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

scripts!(
    register_node,
    heartbeat,
    drain_node,
    candidates,
    dispatch_task,
    ack_job,
    job_route,
    complete_task,
    node_offline,
    sweep,
    load_task,
    task_move,
    set_policy,
    rollback_policy,
    canary_report,
    room_create,
    room_join,
    room_leave,
    room_speak,
    room_signal,
    availability,
    admission_state,
    session_attach,
    session_detach,
    session_end,
    session_route,
    session_room,
    gateway_presence,
    gateway_reap,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_errors_name_the_file_and_its_own_line() {
        let lib_lines = format!("{LIB}\n").lines().count();
        let message = format!(
            "ERR user_script:{}: attempt to compare nil with number script: 3b2f, on @user_script:{}.",
            lib_lines + 12,
            lib_lines + 12
        );
        assert_eq!(
            readable_error("dispatch_task", &message),
            "ERR lua/dispatch_task.lua:12: attempt to compare nil with number script: 3b2f, on @lua/dispatch_task.lua:12."
        );
        assert_eq!(readable_error("sweep", "ERR user_script:5: boom"), "ERR lua/lib.lua:5: boom");
        assert_eq!(readable_error("sweep", "ERR no marker"), "ERR no marker");
    }
}
