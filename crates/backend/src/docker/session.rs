//! Running the agent container attached to the launcher's terminal (a TTY
//! in raw mode, resized with the window) or to its pipes.

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, ResizeContainerTTYOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};

use crate::BackendError;

use crate::terminal::RawMode;
pub use crate::terminal::is_interactive;

/// Attaches, starts, streams, and returns the command's exit status.
pub async fn run(
    docker: &Docker,
    container: &str,
    timing: &(dyn Fn(&str) + Sync),
) -> Result<i32, BackendError> {
    let tty = is_interactive();
    let attach = docker
        .attach_container(
            container,
            Some(
                AttachContainerOptionsBuilder::new()
                    .stream(true)
                    .stdin(true)
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        )
        .await
        .map_err(|e| BackendError::docker(format!("attach to {container}"), e))?;
    let _raw = if tty { RawMode::enter() } else { None };
    docker
        .start_container(container, None)
        .await
        .map_err(|e| BackendError::docker(format!("start {container}"), e))?;
    timing("agent started");

    let resizer =
        tty.then(|| tokio::spawn(follow_window_size(docker.clone(), container.to_owned())));
    let mut input = attach.input;
    let stdin_pump = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 8192];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if input.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    let _ = input.flush().await;
                }
            }
        }
        // End of our input is end of the command's input.
        let _ = input.shutdown().await;
    });

    let mut output = attach.output;
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    while let Some(item) = output.next().await {
        let Ok(item) = item else { break };
        let written = match item {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                stdout.write_all(&message).await.and(stdout.flush().await)
            }
            LogOutput::StdErr { message } => {
                stderr.write_all(&message).await.and(stderr.flush().await)
            }
            LogOutput::StdIn { .. } => Ok(()),
        };
        if written.is_err() {
            break;
        }
    }
    timing("command finished");
    stdin_pump.abort();
    if let Some(resizer) = resizer {
        resizer.abort();
    }

    wait(docker, container).await
}

/// Starts the container with no one attached (`bottle attach` reaches its
/// terminal) and returns the command's exit status.
pub async fn run_detached(
    docker: &Docker,
    container: &str,
    timing: &(dyn Fn(&str) + Sync),
) -> Result<i32, BackendError> {
    docker
        .start_container(container, None)
        .await
        .map_err(|e| BackendError::docker(format!("start {container}"), e))?;
    timing("agent started");
    let status = wait(docker, container).await;
    timing("command finished");
    status
}

async fn wait(docker: &Docker, container: &str) -> Result<i32, BackendError> {
    let mut wait = docker.wait_container(container, None::<WaitContainerOptions>);
    match wait.next().await {
        Some(Ok(response)) => Ok(response.status_code as i32),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code as i32),
        Some(Err(e)) => Err(BackendError::docker(format!("wait for {container}"), e)),
        None => Err(BackendError::docker(
            format!("wait for {container}"),
            "no exit status",
        )),
    }
}

/// Keeps the container's TTY the size of the launcher's window.
async fn follow_window_size(docker: Docker, container: String) {
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    loop {
        if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdout()) {
            let _ = docker
                .resize_container_tty(
                    &container,
                    ResizeContainerTTYOptions {
                        h: i32::from(size.ws_row),
                        w: i32::from(size.ws_col),
                    },
                )
                .await;
        }
        if winch.recv().await.is_none() {
            return;
        }
    }
}
