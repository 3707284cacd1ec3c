//! Where typed lines come from and where printed lines go.
//!
//! On a terminal (stdin and stdout both a TTY) a line editor owns the
//! bottom line: events are printed above the prompt (`#lobby> `) and the
//! half-typed text is redrawn intact under them. Otherwise (piped stdin or
//! stdout) lines are read and printed plainly, exactly as scripts expect.
//!
//! The editor is reedline, with its external printer, rather than
//! rustyline-async: rustyline-async 0.4 (futures-based, which would suit
//! natter_runtime) has history but no completion hook and no history
//! search, both of which issue #15 asks for; reedline has Tab completion
//! menus, Ctrl-R search and an external printer, and is maintained by
//! nushell. It is synchronous and needs no async runtime at all: it runs on
//! its own OS thread (a `std::thread`, since it blocks for the whole
//! session, which a runtime's blocking pool is not meant for) and hands
//! lines over an async channel, which either runtime can await.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use futures::StreamExt;
use reedline::{
    ColumnarMenu, Emacs, ExternalPrinter, KeyCode, KeyModifiers, MenuBuilder, Prompt,
    PromptEditMode, PromptHistorySearch, PromptHistorySearchStatus, Reedline, ReedlineEvent,
    ReedlineMenu, Signal, default_emacs_keybindings,
};

use super::completion::{ChatCompleter, SharedNames};

/// Lines the editor may have printed-but-not-drawn before a print falls
/// back to plain stdout; the editor drains them every few milliseconds.
const PRINTER_CAPACITY: usize = 1024;

/// Longest wait at exit for the editor to stop drawing (it looks at its
/// break signal every 100 ms or so).
const EDITOR_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Unreadable stdin lines in a row after which piped input counts as
/// ended (one bad line is skipped; a stdin that only fails would spin).
const MAX_STDIN_FAILURES: u32 = 16;

/// One thing the user did.
#[derive(Debug)]
pub enum Typed {
    /// A line, Enter pressed (or read from a pipe).
    Line(String),
    /// End of input: Ctrl-D on a terminal, end of the pipe.
    Eof,
}

/// Whether to run the line editor: only when a person is at a terminal on
/// both ends.
pub fn is_interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// The typed lines, as a channel either runtime can await.
pub struct Input {
    lines: async_channel::Receiver<Typed>,
}

impl Input {
    /// The next typed line, or [`Typed::Eof`] for ever once input ended.
    pub async fn next(&self) -> Typed {
        self.lines.recv().await.unwrap_or(Typed::Eof)
    }
}

/// Where lines are printed.
#[derive(Clone)]
pub struct Output {
    /// The editor's printer; `None` when piped.
    printer: Option<ExternalPrinter<String>>,
    /// Set when the editor thread has ended, so prints go straight out.
    editor_done: Arc<AtomicBool>,
    /// Asks the editor to return from `read_line` (reedline's break
    /// signal), so that it stops drawing before the process exits.
    stop_editor: Arc<AtomicBool>,
    /// Says the editor thread has ended (taken by the first `finish`).
    editor_ended: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
}

impl Output {
    /// Prints one line on stdout (above the prompt on a terminal).
    pub fn line(&self, line: String) {
        match &self.printer {
            Some(printer) if !self.editor_done.load(Ordering::Acquire) => {
                if let Err(e) = printer.sender().try_send(line) {
                    // The editor is gone or far behind: print plainly
                    // rather than lose the line.
                    println!("{}", e.into_inner());
                }
            }
            _ => println!("{line}"),
        }
    }

    /// Prints one line where errors go: stderr when piped (as before), and
    /// above the prompt on a terminal, where stderr would break the input
    /// line.
    pub fn error_line(&self, line: String) {
        if self.printer.is_some() {
            self.line(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// Ends terminal use before the process exits: puts the terminal back
    /// out of raw mode even if the editor is still waiting for a key, and
    /// moves past the prompt line. A no-op when piped.
    pub fn finish(&self) {
        if let Some(printer) = &self.printer {
            // Stop the editor first: lines it has taken from the printer
            // but not yet written would otherwise be lost with the process.
            self.stop_editor.store(true, Ordering::Release);
            let ended = self
                .editor_ended
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(ended) = ended
                && ended.recv_timeout(EDITOR_STOP_TIMEOUT).is_err()
            {
                log::info!("the line editor did not stop within {EDITOR_STOP_TIMEOUT:?}");
            }
            self.editor_done.store(true, Ordering::Release);
            if let Err(e) = crossterm::terminal::disable_raw_mode() {
                log::warn!("could not restore the terminal: {e}");
            }
            println!();
            // Lines the editor has not drawn yet (the last words before an
            // exit, such as why the connection ended) are printed here, or
            // they would be lost with the process.
            while let Some(line) = printer.get_line() {
                println!("{line}");
            }
            let _ = std::io::stdout().flush();
        }
    }
}

/// The prompt: the current room, `#lobby> `, or `(no room)> `.
#[derive(Clone, Default)]
pub struct RoomPrompt {
    room: Arc<Mutex<Option<String>>>,
}

impl RoomPrompt {
    /// Changes the room shown; the editor redraws it with the next line it
    /// prints or the next key.
    pub fn set(&self, room: Option<&str>) {
        *self.room.lock().unwrap_or_else(PoisonError::into_inner) = room.map(str::to_owned);
    }
}

impl Prompt for RoomPrompt {
    fn render_prompt_left(&self) -> Cow<'_, str> {
        match &*self.room.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(room) => Cow::Owned(format!("#{room}")),
            None => Cow::Borrowed("(no room)"),
        }
    }

    fn render_prompt_right(&self) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn render_prompt_indicator(&self, _mode: PromptEditMode) -> Cow<'_, str> {
        Cow::Borrowed("> ")
    }

    fn render_prompt_multiline_indicator(&self) -> Cow<'_, str> {
        Cow::Borrowed("::: ")
    }

    fn render_prompt_history_search_indicator(&self, search: PromptHistorySearch) -> Cow<'_, str> {
        let failed = match search.status {
            PromptHistorySearchStatus::Passing => "",
            PromptHistorySearchStatus::Failing => "failing ",
        };
        Cow::Owned(format!(" ({failed}search: {}) ", search.term))
    }
}

/// Starts reading input: the line editor on a terminal, plain lines from
/// stdin otherwise.
pub fn start(
    interactive: bool,
    colour: bool,
    prompt: RoomPrompt,
    names: SharedNames,
) -> (Input, Output) {
    let (tx, lines) = async_channel::bounded(64);
    let editor_done = Arc::new(AtomicBool::new(false));
    if !interactive {
        natter_runtime::spawn(async move {
            let mut stdin = natter_runtime::stdin_lines();
            let mut failures_in_a_row = 0;
            while let Some(line) = stdin.next().await {
                let line = match line {
                    Ok(line) => line,
                    // A line that is not UTF-8 is skipped, as it always
                    // was; a stream that only fails is treated as ended.
                    Err(e) if failures_in_a_row < MAX_STDIN_FAILURES => {
                        failures_in_a_row += 1;
                        log::warn!("skipping an unreadable input line: {e}");
                        continue;
                    }
                    Err(e) => {
                        log::warn!("stdin keeps failing, taking it as ended: {e}");
                        break;
                    }
                };
                failures_in_a_row = 0;
                if tx.send(Typed::Line(line)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Typed::Eof).await;
        });
        let output = Output {
            printer: None,
            editor_done,
            stop_editor: Arc::default(),
            editor_ended: Arc::default(),
        };
        return (Input { lines }, output);
    }
    let printer = ExternalPrinter::new(PRINTER_CAPACITY);
    let stop_editor = Arc::new(AtomicBool::new(false));
    let (ended_tx, ended_rx) = mpsc::channel();
    let output = Output {
        printer: Some(printer.clone()),
        editor_done: editor_done.clone(),
        stop_editor: stop_editor.clone(),
        editor_ended: Arc::new(Mutex::new(Some(ended_rx))),
    };
    let spawned = std::thread::Builder::new()
        .name("natter-input".into())
        .spawn(move || {
            edit_lines(printer, prompt, names, colour, stop_editor, &tx);
            editor_done.store(true, Ordering::Release);
            let _ = ended_tx.send(());
            let _ = tx.send_blocking(Typed::Eof);
        });
    if let Err(e) = spawned {
        // Without the editor thread there is no input; say so and end.
        log::error!("cannot start the input thread: {e}");
    }
    (Input { lines }, output)
}

/// Scrolls what the terminal shows into its scrollback, so the prompt
/// starts on the bottom row, where a chat's input line belongs.
///
/// It also works around reedline 0.49: after printing several external
/// lines at once it asks the terminal for the cursor position *before*
/// flushing them, reads the old row, decides the screen scrolled under it
/// and re-anchors the prompt at the top, pushing the lines just printed
/// off the screen. With the prompt on the bottom row the row it expects and
/// the row the terminal reports agree, so that never happens.
fn start_at_the_bottom() {
    if let Ok((_, rows)) = crossterm::terminal::size() {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all("\n".repeat(usize::from(rows.saturating_sub(1))).as_bytes());
        let _ = stdout.flush();
    }
}

/// The editor thread: reads lines until Ctrl-D, an error, or nobody
/// listens any more.
fn edit_lines(
    printer: ExternalPrinter<String>,
    prompt: RoomPrompt,
    names: SharedNames,
    colour: bool,
    stop: Arc<AtomicBool>,
    tx: &async_channel::Sender<Typed>,
) {
    let mut keys = default_emacs_keybindings();
    // Tab opens the completion menu, or completes at once when only one
    // word fits; Tab again moves through the menu.
    keys.add_binding(
        KeyModifiers::NONE,
        KeyCode::Tab,
        ReedlineEvent::UntilFound(vec![
            ReedlineEvent::Menu("completion".into()),
            ReedlineEvent::MenuNext,
        ]),
    );
    let menu = ColumnarMenu::default().with_name("completion");
    let mut editor = Reedline::create()
        .with_edit_mode(Box::new(Emacs::new(keys)))
        .with_completer(Box::new(ChatCompleter::new(names)))
        .with_menu(ReedlineMenu::EngineCompleter(Box::new(menu)))
        .with_quick_completions(true)
        .with_partial_completions(true)
        .with_ansi_colors(colour)
        .with_external_printer(printer)
        .with_break_signal(stop);
    start_at_the_bottom();
    loop {
        match editor.read_line(&prompt) {
            Ok(Signal::Success(line)) => {
                if tx.send_blocking(Typed::Line(line)).is_err() {
                    return;
                }
            }
            // Ctrl-C clears the line (reedline already did); keep going.
            Ok(Signal::CtrlC) => {}
            // Ctrl-D, or the client is exiting (see `Output::finish`).
            Ok(Signal::CtrlD | Signal::ExternalBreak(_)) => return,
            // Host commands are bindings natter does not set.
            Ok(_) => {}
            Err(e) => {
                log::warn!("the line editor failed: {e}");
                return;
            }
        }
    }
}
