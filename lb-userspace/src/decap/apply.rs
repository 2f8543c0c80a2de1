//! `lb-decap` (attach) and `lb-decap --detach`. Attaching records each change in the
//! state file as it is made; if a step fails, what was done is undone and the error
//! names the step, so the host is never left half configured. Detaching undoes the
//! record in reverse order and removes it.
use anyhow::{bail, Context as _};
use log::{info, warn};

use super::{
    host,
    program::{self, DecapProgram},
    settings::Settings,
    state::{Applied, RouteChange, SysctlChange},
};

/// The sysctls that keep a backend from answering ARP for a VIP held on `lo`: reply only
/// for addresses of the receiving interface, and never source ARP from a VIP. The kernel
/// takes the larger of `all` and the device's value, so `all` covers every NIC.
pub const ARP_SYSCTLS: [(&str, &str); 2] = [
    ("net.ipv4.conf.all.arp_ignore", "1"),
    ("net.ipv4.conf.all.arp_announce", "2"),
];

pub fn attach(settings: &Settings) -> anyhow::Result<Applied> {
    settings.validate()?;
    if let Some(existing) = Applied::load(&settings.state_file)? {
        bail!(
            "lb-decap is attached already (on {}; state file {}): run `lb-decap --detach` first",
            existing.interfaces.join(", "),
            settings.state_file.display()
        );
    }
    let mut applied = Applied {
        hook: settings.hook,
        pin_dir: settings.pin_dir.clone(),
        ..Applied::default()
    };
    match apply(settings, &mut applied) {
        Ok(()) => Ok(applied),
        Err(e) => {
            if let Err(undo) = undo(&applied) {
                warn!("undoing the partial attach failed too: {undo:#}");
                return Err(e.context(format!(
                    "and undoing it failed ({undo:#}); what is left is recorded in {}",
                    settings.state_file.display()
                )));
            }
            let _ = std::fs::remove_file(&settings.state_file);
            Err(e.context("attach failed; everything it had changed was undone"))
        }
    }
}

fn apply(settings: &Settings, applied: &mut Applied) -> anyhow::Result<()> {
    let save = |applied: &Applied| applied.save(&settings.state_file);
    save(applied)?;
    let mut prog = DecapProgram::load()?;
    prog.configure(&settings.program_config())?;
    std::fs::create_dir_all(&settings.pin_dir)
        .with_context(|| format!("creating {}", settings.pin_dir.display()))?;
    prog.pin_counters(&program::counters_path(&settings.pin_dir))?;
    applied.counters_pinned = true;
    save(applied)?;
    // The addresses and sysctls first: once the program decapsulates, the inner packets
    // must find the VIP local.
    for vip in &settings.vips {
        if host::add_vip(*vip)? {
            applied.vips.push(*vip);
            save(applied)?;
        } else {
            info!("{vip} is on lo already; left as it is");
        }
    }
    if settings.arp_sysctls {
        for (name, value) in ARP_SYSCTLS {
            let previous = host::read_sysctl(name)?;
            if previous != value {
                host::write_sysctl(name, value)?;
                applied.sysctls.push(SysctlChange {
                    name: name.into(),
                    previous,
                });
                save(applied)?;
            }
        }
    }
    for prefix in &settings.client_routes {
        let mss = settings.mss_for(prefix);
        if mss == 0 {
            continue;
        }
        let previous_advmss = host::advmss(*prefix)?;
        host::set_advmss(*prefix, Some(u32::from(mss)))?;
        applied.routes.push(RouteChange {
            prefix: *prefix,
            previous_advmss,
        });
        save(applied)?;
    }
    for interface in &settings.interfaces {
        prog.attach(
            settings.hook,
            interface,
            &program::link_path(&settings.pin_dir, interface),
        )?;
        applied.interfaces.push(interface.clone());
        save(applied)?;
        info!(
            "attached the decap program to {interface} ({:?})",
            settings.hook
        );
    }
    Ok(())
}

/// Undoes `applied` in reverse order; every step is tried, the first error returned.
fn undo(applied: &Applied) -> anyhow::Result<()> {
    let mut first: Option<anyhow::Error> = None;
    let mut note = |r: anyhow::Result<()>| {
        if let Err(e) = r {
            warn!("{e:#}");
            first.get_or_insert(e);
        }
    };
    for interface in applied.interfaces.iter().rev() {
        note(program::unpin_link(&program::link_path(
            &applied.pin_dir,
            interface,
        )));
    }
    for route in applied.routes.iter().rev() {
        note(host::set_advmss(route.prefix, route.previous_advmss));
    }
    for sysctl in applied.sysctls.iter().rev() {
        note(host::write_sysctl(&sysctl.name, &sysctl.previous));
    }
    for vip in applied.vips.iter().rev() {
        note(host::remove_vip(*vip));
    }
    if applied.counters_pinned {
        let counters = program::counters_path(&applied.pin_dir);
        if counters.exists() {
            note(
                std::fs::remove_file(&counters)
                    .with_context(|| format!("removing {}", counters.display())),
            );
        }
        // Only if empty: the operator may keep other pins there.
        let _ = std::fs::remove_dir(&applied.pin_dir);
    }
    first.map_or(Ok(()), Err)
}

/// Undoes what the state file records and removes it. Nothing recorded is no error.
pub fn detach(settings: &Settings) -> anyhow::Result<Option<Applied>> {
    let Some(applied) = Applied::load(&settings.state_file)? else {
        return Ok(None);
    };
    undo(&applied).with_context(|| {
        format!(
            "detaching; the record stays in {} for another try",
            settings.state_file.display()
        )
    })?;
    std::fs::remove_file(&settings.state_file)
        .with_context(|| format!("removing {}", settings.state_file.display()))?;
    Ok(Some(applied))
}
