//! hello-counter: greets a visitor, counts visits per name and in total
//! (atomic counters), and keeps a typed profile per name.

use databelt::{Context, Error};

/// Who is visiting.
#[databelt::data]
pub struct Visit {
    /// The visitor's name.
    pub name: String,
}

/// The reply.
#[databelt::data]
pub struct Greeting {
    /// A greeting line.
    pub message: String,
    /// How often this name has visited, this visit included.
    pub visits: i64,
    /// Visits of all names.
    pub total: i64,
    /// The run in which this name was first seen.
    pub first_seen_run: String,
}

/// Typed state kept per visitor.
#[databelt::data]
struct Profile {
    first_seen_run: String,
    first_seen_node: String,
}

#[databelt::function]
fn hello(ctx: &Context, input: Visit) -> Result<Greeting, Error> {
    if input.name.is_empty() {
        return Err(Error::Other("name must not be empty".into()));
    }
    let scope = ctx.scope("hello-counter")?;
    let visits = scope.increment(&format!("visits/{}", input.name), 1)?;
    let total = scope.increment("total", 1)?;
    let key = format!("profile/{}", input.name);
    let profile = match scope.get::<Profile>(&key)? {
        Some(p) => p,
        None => {
            let p = Profile { first_seen_run: ctx.run_id().to_string(), first_seen_node: ctx.node_id().to_string() };
            scope.set(&key, &p)?;
            p
        }
    };
    Ok(Greeting {
        message: format!("hello {} (from {})", input.name, profile.first_seen_node),
        visits,
        total,
        first_seen_run: profile.first_seen_run,
    })
}
