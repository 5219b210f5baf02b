//! `berth lease …`.

use anyhow::Context;
use berth_api::LeaseList;
use berth_client::{AcquireOutcome, Client, ClientError, ListOptions};

use crate::{
    args::{AcquireArgs, GetArgs, LeaseCommand, ListArgs, Output, ReleaseArgs, RenewArgs},
    exit::Failure,
    output::{Table, print, response_table, status_table},
    wait::{self, WaitOptions, held_by},
};

pub(crate) async fn run(
    client: &Client,
    output: Output,
    command: LeaseCommand,
) -> anyhow::Result<()> {
    match command {
        LeaseCommand::Acquire(args) => acquire(client, output, args).await,
        LeaseCommand::Renew(args) => renew(client, output, args).await,
        LeaseCommand::Release(args) => release(client, output, args).await,
        LeaseCommand::Get(args) => get(client, output, args).await,
        LeaseCommand::List(args) => list(client, output, args).await,
        LeaseCommand::Watch(args) => crate::watch::run(client, output, args).await,
    }
}

async fn acquire(client: &Client, output: Output, args: AcquireArgs) -> anyhow::Result<()> {
    let AcquireArgs {
        lease,
        holder,
        ttl,
        wait,
    } = args;
    let builder = client.lease(&lease.namespace, &lease.name, holder, ttl);
    let opts = WaitOptions {
        wait: wait.wait,
        timeout: wait.wait_timeout,
        poll: wait.poll_interval,
    };
    let outcome = wait::acquire(&builder, &lease, opts).await?;
    match outcome {
        // Dropping the handle leaves the lease held until its TTL runs out.
        AcquireOutcome::Held(handle) => print(output, handle.response(), || {
            response_table(&lease, handle.response())
        }),
        AcquireOutcome::Denied(current) => {
            print(output, &current, || response_table(&lease, &current))?;
            Err(wait::denied(&current, &lease).into())
        }
    }
}

async fn renew(client: &Client, output: Output, args: RenewArgs) -> anyhow::Result<()> {
    let RenewArgs {
        lease,
        holder,
        fencing_token,
        ttl,
    } = args;
    let response = client
        .renew(&lease.namespace, &lease.name, &holder, fencing_token, ttl)
        .await?;
    print(output, &response, || response_table(&lease, &response))?;
    if !response.acquired {
        return Err(Failure::HeldElsewhere(format!(
            "renew refused: lease {lease} is {}",
            held_by(&response)
        ))
        .into());
    }
    Ok(())
}

async fn release(client: &Client, output: Output, args: ReleaseArgs) -> anyhow::Result<()> {
    let ReleaseArgs {
        lease,
        holder,
        fencing_token,
    } = args;
    match client
        .release(&lease.namespace, &lease.name, &holder, fencing_token)
        .await
    {
        Ok(()) => {
            // 204 carries no object, so only the table format prints anything.
            if output == Output::Table {
                println!("lease {lease} released");
            }
            Ok(())
        }
        Err(e @ ClientError::Conflict { .. }) => {
            Err(anyhow::Error::new(e).context(format!("cannot release lease {lease}")))
        }
        Err(e) => Err(e.into()),
    }
}

async fn get(client: &Client, output: Output, args: GetArgs) -> anyhow::Result<()> {
    let GetArgs { lease } = args;
    let status = client
        .get(&lease.namespace, &lease.name)
        .await?
        .with_context(|| format!("lease {lease} not found"))?;
    print(output, &status, || status_table([&status]))
}

async fn list(client: &Client, output: Output, args: ListArgs) -> anyhow::Result<()> {
    let ListArgs {
        namespace,
        holder,
        limit,
        continue_token,
        all_pages,
    } = args;
    let mut opts = ListOptions {
        limit,
        continue_token,
        holder,
    };
    let mut all = LeaseList {
        items: Vec::new(),
        continue_token: None,
    };
    loop {
        let page = client.list(namespace.as_deref(), &opts).await?;
        all.items.extend(page.items);
        match page.continue_token {
            Some(token) if all_pages => opts.continue_token = Some(token),
            other => {
                all.continue_token = other;
                break;
            }
        }
    }
    print(output, &all, || {
        if all.items.is_empty() {
            return Table::new(vec!["No leases found."]);
        }
        status_table(&all.items)
    })?;
    if output == Output::Table
        && let Some(token) = &all.continue_token
    {
        eprintln!("more leases: repeat with --continue {token} (or use --all-pages)");
    }
    Ok(())
}
