//! The Lua scripts of `lua/`, compiled into the binary with `lua/lib.lua` in front of each.
//! Invoked with EVALSHA; `redis::Script` reloads a script once on NOSCRIPT (after a Redis restart).

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
                const LIB: &str = include_str!("../../lua/lib.lua");
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
    session_attach,
    session_detach,
    session_end,
    session_route,
    session_room,
    gateway_presence,
    gateway_reap,
);
