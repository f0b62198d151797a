//! Drawing the dashboard: the bottles' table on top, the inbox of pending
//! requests and the selected bottle's gate tail below, the verbs the
//! selection allows on the last line. Under 80 columns the table keeps
//! its essential columns and the inbox sits above the tail.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, List, ListItem, ListState, Paragraph, Row, Table, TableState, Wrap,
};

use crate::app::{App, Focus, Prompt};
use crate::model::{Kind, State, age};

/// Narrower than this, the layout is the narrow one.
const NARROW: u16 = 80;

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if app.help {
        help(frame, area);
        return;
    }
    let [title, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    let pending = app.snapshot.requests.len();
    let header = format!(
        "bot-bottle · {} bottle{} · {} pending request{}",
        app.snapshot.bottles.len(),
        plural(app.snapshot.bottles.len()),
        pending,
        plural(pending)
    );
    // A backend that did not answer: its bottles may be missing.
    let header = match app.snapshot.problems.first() {
        Some(problem) => format!("{header} · not answering: {problem}"),
        None => header,
    };
    frame.render_widget(Paragraph::new(header).style(bold()), title);
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(body);
    bottles(frame, app, top);
    let narrow = area.width < NARROW;
    let [inbox_area, tail_area] = if narrow {
        Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(bottom)
    } else {
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(bottom)
    };
    inbox(frame, app, inbox_area);
    tail(frame, app, tail_area);
    status_line(frame, app, status);
    if let Some(prompt) = &app.prompt {
        prompt_box(frame, app, prompt, area);
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

fn tone(app: &App, color: Color) -> Style {
    if app.color {
        Style::default().fg(color)
    } else {
        Style::default()
    }
}

fn focused(app: &App, focus: Focus, title: String) -> Block<'static> {
    let block = Block::default().borders(Borders::ALL).title(title);
    if app.focus == focus {
        block.border_style(bold())
    } else {
        block
    }
}

fn bottles(frame: &mut Frame, app: &App, area: Rect) {
    let narrow = area.width < NARROW;
    let header: Vec<&str> = if narrow {
        vec!["IDENTITY", "STATE", "REQ", "LAST REFUSAL"]
    } else {
        vec![
            "IDENTITY",
            "AGENT",
            "BACKEND",
            "RUNTIME",
            "AGE",
            "STATE",
            "GATE",
            "REQ",
            "LAST REFUSAL",
        ]
    };
    let rows: Vec<Row> = app
        .snapshot
        .bottles
        .iter()
        .map(|b| {
            let state_style = match b.state {
                State::Running => tone(app, Color::Green),
                State::Orphaned | State::Other => tone(app, Color::Red),
                State::Stopped | State::Preserved => tone(app, Color::DarkGray),
            };
            let pending = if b.pending == 0 {
                Cell::from("-")
            } else {
                Cell::from(b.pending.to_string())
                    .style(tone(app, Color::Yellow).add_modifier(Modifier::BOLD))
            };
            let refusal = Cell::from(b.last_refusal.clone().unwrap_or_else(|| "-".into()))
                .style(tone(app, Color::Red));
            let state = Cell::from(b.state.as_str()).style(state_style);
            if narrow {
                Row::new(vec![
                    Cell::from(b.identity.clone()),
                    state,
                    pending,
                    refusal,
                ])
            } else {
                Row::new(vec![
                    Cell::from(b.identity.clone()),
                    Cell::from(b.agent.clone()),
                    Cell::from(b.backend.clone()),
                    Cell::from(b.runtime.clone()),
                    Cell::from(age(b.started, app.now)),
                    state,
                    Cell::from(b.health.clone()),
                    pending,
                    refusal,
                ])
            }
        })
        .collect();
    let widths: Vec<Constraint> = if narrow {
        vec![
            Constraint::Length(16),
            Constraint::Length(9),
            Constraint::Length(3),
            Constraint::Min(10),
        ]
    } else {
        vec![
            Constraint::Length(18),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(4),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(3),
            Constraint::Min(10),
        ]
    };
    let empty = app.snapshot.bottles.is_empty();
    let title = if empty {
        " Bottles: none yet; n starts one ".to_owned()
    } else {
        " Bottles ".to_owned()
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(bold()))
        .block(focused(app, Focus::Bottles, title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default();
    if !empty {
        state.select(Some(app.selected));
    }
    frame.render_stateful_widget(table, area, &mut state);
}

fn inbox(frame: &mut Frame, app: &App, area: Rect) {
    let requests = &app.snapshot.requests;
    let items: Vec<ListItem> = requests
        .iter()
        .map(|r| {
            ListItem::new(vec![
                Line::from(vec![
                    Span::styled(r.id.clone(), bold()),
                    Span::raw(format!(" {} ", r.identity)),
                    Span::styled(r.summary.clone(), tone(app, Color::Yellow)),
                ]),
                Line::from(format!("  why: {}", r.reason)),
            ])
        })
        .collect();
    let title = format!(" Requests ({}) ", requests.len());
    let list = if items.is_empty() {
        List::new(vec![ListItem::new("no pending requests")])
    } else {
        List::new(items)
    }
    .block(focused(app, Focus::Inbox, title))
    .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = ListState::default();
    if app.focus == Focus::Inbox && !requests.is_empty() {
        state.select(Some(app.inbox_selected));
    }
    frame.render_stateful_widget(list, area, &mut state);
}

fn tail(frame: &mut Frame, app: &App, area: Rect) {
    let title = match app.selected_identity() {
        Some(id) => format!(" Gate of {id} [{}] ", app.filter.label()),
        None => " Gate ".to_owned(),
    };
    let shown: Vec<&crate::model::TailLine> = app
        .snapshot
        .tail
        .iter()
        .filter(|l| app.filter.admits(l.kind))
        .collect();
    // The newest lines that fit.
    let room = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = shown
        .iter()
        .skip(shown.len().saturating_sub(room))
        .map(|l| {
            let style = match l.kind {
                Kind::Refused => tone(app, Color::Red),
                Kind::Allowed => tone(app, Color::Green),
                Kind::Credential => tone(app, Color::Cyan),
                Kind::Git => tone(app, Color::Magenta),
                Kind::Request => tone(app, Color::Yellow),
                Kind::Gate => tone(app, Color::DarkGray),
            };
            Line::from(vec![
                Span::raw(format!("{} ", l.time)),
                Span::styled(format!("{:<11}", l.kind.label()), style),
                Span::raw(l.text.clone()),
            ])
        })
        .collect();
    let body = if lines.is_empty() {
        vec![Line::from("no decisions yet")]
    } else {
        lines
    };
    frame.render_widget(
        Paragraph::new(body).block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

fn status_line(frame: &mut Frame, app: &App, area: Rect) {
    let line = match &app.message {
        Some(message) => Line::from(Span::styled(message.clone(), bold())),
        None => Line::from(
            app.verbs()
                .into_iter()
                .flat_map(|(key, what)| {
                    [Span::styled(key, bold()), Span::raw(format!(" {what}  "))]
                })
                .collect::<Vec<_>>(),
        ),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn prompt_box(frame: &mut Frame, app: &App, prompt: &Prompt, area: Rect) {
    let (title, lines): (&str, Vec<Line>) = match prompt {
        Prompt::TokenRef { request, input } => (
            " Approve a credential route ",
            vec![
                Line::from(format!("{request}: the host variable holding the secret")),
                Line::from(format!("> {input}_")),
                Line::from("enter approves · esc cancels"),
            ],
        ),
        Prompt::DenyReason { request, input } => (
            " Deny ",
            vec![
                Line::from(format!("{request}: what the agent is told (may be empty)")),
                Line::from(format!("> {input}_")),
                Line::from("enter denies · esc cancels"),
            ],
        ),
        Prompt::Confirm { question, .. } => (" Confirm ", vec![Line::from(question.clone())]),
        Prompt::ConfirmApproval {
            request,
            summary,
            detail,
        } => {
            let mut lines = vec![
                Line::from(Span::styled(
                    format!("approve {request}: {summary}"),
                    bold(),
                )),
                Line::from("it grants exactly:"),
            ];
            lines.extend(detail.iter().map(|l| Line::from(format!("  {l}"))));
            lines.push(Line::from("y approves · any other key cancels"));
            (" Approve ", lines)
        }
        Prompt::PickAgent { agents, selected } => {
            (" New bottle: agent ", choices(agents, *selected))
        }
        Prompt::PickBackend {
            agent,
            backends,
            selected,
        } => {
            let mut lines = vec![Line::from(format!("{agent} runs on:"))];
            lines.extend(choices(backends, *selected));
            (" New bottle: backend ", lines)
        }
    };
    let width = area.width.min(90);
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(tone(app, Color::Yellow).add_modifier(Modifier::BOLD));
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        popup,
    );
}

fn choices(items: &[String], selected: usize) -> Vec<Line<'static>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if i == selected {
                Line::from(Span::styled(
                    format!("> {item}"),
                    Style::default().add_modifier(Modifier::REVERSED),
                ))
            } else {
                Line::from(format!("  {item}"))
            }
        })
        .collect()
}

fn help(frame: &mut Frame, area: Rect) {
    let keys = [
        ("↑ ↓ / j k", "move in the table (or the inbox)"),
        ("tab", "switch between the bottles and the inbox"),
        ("enter / a", "attach to the selected running bottle's agent"),
        (
            "r",
            "resume the selected stopped bottle (detached) and attach",
        ),
        ("s", "stop the selected bottle, kept for resume"),
        ("x", "remove the selected stopped bottle (asks first)"),
        ("n", "a new bottle: pick an agent, then a backend"),
        ("c", "clean up what no running bottle holds (asks first)"),
        (
            "y",
            "approve the selected request (a route asks for its host variable)",
        ),
        (
            "d",
            "deny the selected request (asks what to tell the agent)",
        ),
        (
            "f",
            "filter the gate tail: all, refused, allowed, credential, git, request, gate",
        ),
        ("?", "this help; any key closes it"),
        ("q / esc", "quit (bottles keep running)"),
    ];
    let mut lines = vec![
        Line::from(Span::styled("bot-bottle dashboard: keys", bold())),
        Line::from(""),
    ];
    for (key, what) in keys {
        lines.push(Line::from(vec![
            Span::styled(format!("{key:<12}"), bold()),
            Span::raw(what),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(
        "Inside tmux, attach, new and resume open the agent in a new window (BOTTLE_DASHBOARD_TMUX=pane: a pane).",
    ));
    lines.push(Line::from(
        "Outside tmux, attach hands this terminal over; Ctrl-P Ctrl-Q detaches and brings the dashboard back.",
    ));
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::ALL).title(" Help "))
            .wrap(Wrap { trim: false }),
        area,
    );
}
