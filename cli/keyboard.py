"""Typing into other applications for `voxtral dictate`: the hotkey, and the back ends.

Both back ends listen for the hotkey through pynput (Quartz events on macOS, RECORD on X11)
and type through it on macOS; on X11 they type with xdotool (XTest, as a real keyboard),
since pynput's X11 typing sends XSendEvent, which terminals and some toolkits ignore.
pynput is imported only here, only when needed; each finds the focused window and
handles the clipboard its platform's way. Hotkey parsing and `HotkeyState` are pure, so
they are tested without a display.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import time
from collections.abc import Hashable
from dataclasses import dataclass

from voxtral_mlx import VoxtralError

MODIFIERS = ("ctrl", "alt", "shift", "cmd")  # the order a hotkey is written in
ALIASES = {
    "control": "ctrl",
    "option": "alt",
    "opt": "alt",
    "command": "cmd",
    "super": "cmd",
    "win": "cmd",
    "meta": "cmd",
    "return": "enter",
    "escape": "esc",
}
NAMED_KEYS = (
    "space tab enter esc backspace delete insert home end page_up page_down up down left "
    "right menu pause print_screen scroll_lock"
).split()
KEYS = (*NAMED_KEYS, *(f"f{i}" for i in range(1, 21)))
# Passive hotkeys also reach the focused application: these do nothing in most of them.
DEFAULT_HOTKEYS = {"darwin": "ctrl+shift+space", "linux": "ctrl+alt+space"}
# A release of a hotkey key followed this soon by its press is the key repeating, not let go
REPEAT_GAP = 0.15
# --paste: how long the application gets to read the clipboard before it is restored
PASTE_SETTLE = 0.25
# xdotool's pause between typed keys (its default, 12 ms, types about 80 characters a second)
XDOTOOL_DELAY_MS = 2
XDOTOOL_HINT = (
    "xdotool not found: typing through pynput instead, whose X11 keystrokes (XSendEvent) "
    "terminals and some applications ignore (sudo apt install xdotool)"
)

ACCESSIBILITY_HINT = (
    "macOS does not let this terminal control the keyboard: turn it on in System Settings > "
    "Privacy & Security > Accessibility, then restart the terminal"
)
INPUT_MONITORING_HINT = (
    "macOS does not let this terminal see the hotkey: turn it on in System Settings > "
    "Privacy & Security > Input Monitoring, then restart the terminal"
)
WAYLAND_HINT = (
    "this is a Wayland session, where one program cannot type into another's windows: "
    "voxtral dictate types through X11 (log in to an X11 session, e.g. 'GNOME on Xorg')"
)
NO_DISPLAY_HINT = (
    "no X display ($DISPLAY is not set): voxtral dictate types into the windows of an X11 "
    "desktop, so run it from a terminal there"
)
PYNPUT_HINT = "typing needs pynput: pip install 'voxtral-mlx[dictate]'"


def default_hotkey() -> str:
    return DEFAULT_HOTKEYS["darwin" if sys.platform == "darwin" else "linux"]


@dataclass(frozen=True)
class Hotkey:
    modifiers: tuple[str, ...]  # in MODIFIERS order
    key: str  # a name from KEYS, or one character

    def __str__(self) -> str:
        return "+".join((*self.modifiers, self.key))

    @property
    def pynput(self) -> str:
        """In pynput's HotKey.parse syntax: <ctrl>+<alt>+<space>, characters bare."""
        names = [f"<{m}>" for m in self.modifiers]
        return "+".join((*names, self.key if len(self.key) == 1 else f"<{self.key}>"))


def parse_hotkey(spec: str) -> Hotkey:
    """`ctrl+alt+space`, `<ctrl>+<alt>+<space>` (pynput's syntax), `cmd+shift+d`, `f8`:
    modifiers, then one key; case and angle brackets do not matter."""
    modifiers, keys = set(), []
    for part in spec.split("+"):
        name = part.strip().strip("<>").lower()
        name = ALIASES.get(name, name)
        if name in MODIFIERS:
            modifiers.add(name)
        elif name in KEYS or (len(name) == 1 and not name.isspace()):
            keys.append(name)
        else:
            raise VoxtralError(
                f"--hotkey {spec!r}: unknown key {part.strip()!r} (modifiers: "
                f"{', '.join(MODIFIERS)}; keys: {', '.join(NAMED_KEYS)}, f1-f20, or one character)"
            )
    if len(keys) != 1:
        raise VoxtralError(
            f"--hotkey {spec!r}: give one key besides the modifiers, e.g. {default_hotkey()}"
        )
    typed = len(keys[0]) == 1 or keys[0] == "space"  # a key that types a character
    if typed and not modifiers - {"shift"}:
        # alone it would toggle dictation whenever it is typed; with shift the keyboard
        # reports another character (shift+1 is "!"), which never matches
        raise VoxtralError(
            f"--hotkey {spec!r}: a key that types a character needs ctrl, alt or cmd with it "
            f"(or use a function key such as f8), e.g. {default_hotkey()}"
        )
    return Hotkey(tuple(m for m in MODIFIERS if m in modifiers), keys[0])


class HotkeyState:
    """Which keys of the hotkey are held, and when the whole hotkey goes down and up.

    Keys are whatever the listener reports (pynput's canonical keys), applied in order by
    the main loop. X11 may repeat a held key as release-press pairs: a release counts once
    the key has stayed up for REPEAT_GAP."""

    def __init__(self, keys: set[Hashable], modifiers: set[Hashable]):
        self.keys, self.modifiers = frozenset(keys), frozenset(modifiers)
        self.held: set[Hashable] = set()
        self.down = False
        self._up_at: float | None = None  # the hotkey goes up then, unless a key comes back

    def update(self, key: Hashable, pressed: bool, now: float) -> bool:
        """One key event; True when it completes the hotkey (it went down)."""
        if pressed:
            self.held.add(key)
            self._up_at = None
            if not self.down and self.held >= self.keys:
                self.down = True
                return True
        else:
            self.held.discard(key)
            if self.down and self._up_at is None:
                self._up_at = now + REPEAT_GAP
        return False

    def released(self, now: float) -> bool:
        """True once, when the hotkey has gone up."""
        if self._up_at is None or now < self._up_at or self.held >= self.keys:
            return False
        self.down, self._up_at = False, None
        return True

    @property
    def modifiers_held(self) -> bool:
        return bool(self.held & self.modifiers)


class Keyboard:
    """Types and pastes into the focused window and listens for the hotkey, through pynput.
    Subclasses say which window has the focus and handle the clipboard."""

    paste_modifier = "ctrl"

    def __init__(self):
        from pynput import keyboard

        self._pynput = keyboard
        self._controller = keyboard.Controller()
        self._listener = None
        self.hotkey: HotkeyState | None = None  # once listening
        self.first_focus: Hashable | None = None  # the focus as dictate starts (see open)
        self.events: queue.Queue = queue.Queue()  # (key, pressed), from the listener's thread

    def focus(self) -> Hashable:
        """The window (or application) that has the keyboard focus: compared, never shown."""
        raise NotImplementedError

    def type(self, text: str) -> None:
        try:
            self._controller.type(text)
        except self._controller.InvalidCharacterException as e:
            index, _ = e.args  # a character the keyboard cannot make: skip it
            self.type(text[index + 1 :])

    def paste(self, text: str) -> None:
        """Through the clipboard, which then gets its previous content back."""
        saved = self._clipboard()
        if not self._set_clipboard(text):  # no clipboard to be had: typed instead
            self.type(text)
            return
        modifier = getattr(self._pynput.Key, self.paste_modifier)
        with self._controller.pressed(modifier):
            self._controller.tap("v")
        time.sleep(PASTE_SETTLE)
        self._restore_clipboard(saved)

    def listen(self, hotkey: Hotkey) -> None:
        """Start listening: each press and release of the hotkey's keys goes into `events`
        (keystrokes this process types are not reported); `self.hotkey` follows them."""
        kb = self._pynput
        try:
            keys = kb.HotKey.parse(hotkey.pynput)
        except ValueError as e:
            raise VoxtralError(f"--hotkey {hotkey}: not a key on this platform ({e})") from e

        def handler(pressed: bool):
            def report(key, injected: bool) -> None:
                if key is not None and not injected and (key := canonical(key)) in wanted:
                    self.events.put((key, pressed))

            return report

        self._listener = kb.Listener(on_press=handler(True), on_release=handler(False))
        canonical = self._listener.canonical
        wanted = {canonical(k) for k in keys}
        modifiers = {canonical(getattr(kb.Key, m)) for m in hotkey.modifiers}
        self._listener.start()
        self._listener.wait()
        self.hotkey = HotkeyState(wanted, modifiers)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        self._controller = None  # its connection to the display closes now

    def _clipboard(self):
        raise NotImplementedError

    def _set_clipboard(self, text: str) -> bool:
        raise NotImplementedError

    def _restore_clipboard(self, saved) -> None:
        raise NotImplementedError


# X11 clipboard formats: text first; the selection protocol's own targets are no content
TEXT_TARGETS = ("UTF8_STRING", "text/plain;charset=utf-8", "STRING", "TEXT")
META_TARGETS = {"TARGETS", "TIMESTAMP", "MULTIPLE", "SAVE_TARGETS", "DELETE"}


class X11Keyboard(Keyboard):
    """X11: the focus from the X server; the clipboard through xclip, whose background
    process keeps serving what it was given after dictate exits, as X11 clipboards need."""

    def __init__(self, display):
        super().__init__()
        self._display = display
        self._root = display.screen().root
        self._xdotool = shutil.which("xdotool")

    def close(self) -> None:
        super().close()
        self._display.close()

    def focus(self) -> int:
        """The top-level window with the focus (the one under the pointer when the focus
        follows it); 0 when no window has it, or it went away while asked about."""
        from Xlib import X
        from Xlib.error import XError

        try:
            return self._focus()
        except XError:  # (a dialog closed meanwhile: BadWindow)
            return X.NONE

    def _focus(self) -> int:
        from Xlib import X

        window = self._display.get_input_focus().focus
        if window == X.PointerRoot:
            window = self._root.query_pointer().child
        if window in (X.NONE, X.PointerRoot) or window.id == self._root.id:
            return X.NONE
        while (parent := window.query_tree().parent) and parent.id != self._root.id:
            window = parent
        return window.id

    def type(self, text: str) -> None:
        """Through xdotool, which types with XTest (as a real keyboard does, any character:
        it maps a spare key code to one the keymap lacks); pynput's typing on X11 sends
        XSendEvent, which terminals and some toolkits ignore."""
        if self._xdotool is None:
            return super().type(text)
        subprocess.run(
            [self._xdotool, "type", "--delay", str(XDOTOOL_DELAY_MS), "--", text],
            check=False,
            capture_output=True,
            timeout=30 + len(text) * 0.05,
        )

    def paste(self, text: str) -> None:
        if self._xdotool is None:
            return super().paste(text)
        saved = self._clipboard()
        if not self._set_clipboard(text):
            self.type(text)
            return
        subprocess.run([self._xdotool, "key", "ctrl+v"], check=False, capture_output=True)
        time.sleep(PASTE_SETTLE)
        self._restore_clipboard(saved)

    def _clipboard(self) -> tuple[str, bytes] | None:
        """The clipboard's text (else its first format), or None when it is empty."""
        targets = _xclip("-o", "-t", "TARGETS")
        names = targets.stdout.decode(errors="replace").split() if targets.returncode == 0 else []
        text = [t for t in TEXT_TARGETS if t in names]
        target = (text or [t for t in names if t not in META_TARGETS] or [None])[0]
        if target is None:
            return None
        data = _xclip("-o", "-t", target)
        return (target, data.stdout) if data.returncode == 0 else None

    def _set_clipboard(self, text: str) -> bool:
        return _xclip("-i", "-t", "UTF8_STRING", data=text.encode()).returncode == 0

    def _restore_clipboard(self, saved: tuple[str, bytes] | None) -> None:
        if saved is not None:
            _xclip("-i", "-t", saved[0], data=saved[1])
            return
        from Xlib import X
        from Xlib.protocol import request

        # it was empty: no owner again (xclip, told so, exits)
        clipboard = self._display.intern_atom("CLIPBOARD")
        request.SetSelectionOwner(
            display=self._display.display, window=X.NONE, selection=clipboard, time=X.CurrentTime
        )
        self._display.sync()


def _xclip(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    """xclip on the clipboard selection. `-i` returns once xclip owns the selection (its
    background copy serves it), so its output must not be a pipe we wait on."""
    command = ["xclip", "-selection", "clipboard", *args]
    try:
        if data is None:
            return subprocess.run(command, capture_output=True, timeout=5)
        return subprocess.run(
            command, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5
        )
    except subprocess.TimeoutExpired:  # a clipboard owner that never answers
        return subprocess.CompletedProcess(command, 1, b"", b"")


class MacKeyboard(Keyboard):
    """macOS: the focus is the application that owns the frontmost window (the window list,
    which unlike NSWorkspace needs no run loop to stay current); the clipboard is the
    general pasteboard, saved and restored item by item, every type of each."""

    paste_modifier = "cmd"

    def focus(self) -> int:
        import Quartz

        windows = Quartz.CGWindowListCopyWindowInfo(
            Quartz.kCGWindowListOptionOnScreenOnly | Quartz.kCGWindowListExcludeDesktopElements,
            Quartz.kCGNullWindowID,
        )
        for window in windows or ():  # front to back; layer 0 holds the applications' windows
            if window.get(Quartz.kCGWindowLayer) == 0:
                return int(window.get(Quartz.kCGWindowOwnerPID, 0))
        return 0

    def _clipboard(self) -> list[dict]:
        from AppKit import NSPasteboard

        items = NSPasteboard.generalPasteboard().pasteboardItems() or ()
        return [{kind: item.dataForType_(kind) for kind in item.types()} for item in items]

    def _set_clipboard(self, text: str) -> bool:
        from AppKit import NSPasteboard, NSPasteboardTypeString

        board = NSPasteboard.generalPasteboard()
        board.clearContents()
        return bool(board.setString_forType_(text, NSPasteboardTypeString))

    def _restore_clipboard(self, saved: list[dict]) -> None:
        from AppKit import NSPasteboard, NSPasteboardItem

        board = NSPasteboard.generalPasteboard()
        board.clearContents()
        items = []
        for kinds in saved:
            item = NSPasteboardItem.alloc().init()
            for kind, data in kinds.items():
                if data is not None:
                    item.setData_forType_(data, kind)
            items.append(item)
        if items:
            board.writeObjects_(items)


def open_keyboard(hotkey: Hotkey, paste: bool = False) -> Keyboard:
    """The platform's back end, listening for `hotkey`, once everything it needs is there
    (a display, the permissions, xclip for --paste); otherwise a VoxtralError that says
    what to do."""
    if sys.platform == "darwin":
        keyboard = _open_macos()
    elif sys.platform.startswith("linux"):
        keyboard = _open_x11(paste)
    else:
        raise VoxtralError(f"voxtral dictate types on macOS and Linux (X11), not {sys.platform}")
    keyboard.listen(hotkey)
    # before the model loads: the user has just started dictate from the focused window
    keyboard.first_focus = keyboard.focus()
    return keyboard


def _open_macos() -> MacKeyboard:
    try:
        import HIServices
        import Quartz
    except ImportError as e:
        raise VoxtralError("typing needs pynput: pip install pynput") from e
    if not HIServices.AXIsProcessTrusted():  # posting key events needs Accessibility
        raise VoxtralError(ACCESSIBILITY_HINT)
    listen_access = getattr(Quartz, "CGPreflightListenEventAccess", None)  # macOS 10.15+
    if listen_access is not None and not listen_access():
        raise VoxtralError(INPUT_MONITORING_HINT)
    return MacKeyboard()


def _open_x11(paste: bool) -> X11Keyboard:
    if os.environ.get("WAYLAND_DISPLAY") or os.environ.get("XDG_SESSION_TYPE") == "wayland":
        raise VoxtralError(WAYLAND_HINT)
    name = os.environ.get("DISPLAY")
    if not name:
        raise VoxtralError(NO_DISPLAY_HINT)
    try:
        from Xlib import display, error
    except ImportError as e:
        raise VoxtralError(PYNPUT_HINT) from e
    try:
        x = display.Display(name)
    except (error.DisplayError, OSError) as e:
        raise VoxtralError(f"cannot open the X display {name!r}: {e}") from e
    for extension, use in (("XTEST", "typing"), ("RECORD", "the hotkey")):
        if not x.has_extension(extension):
            raise VoxtralError(f"the X server {name!r} lacks the {extension} extension {use} needs")
    if paste and shutil.which("xclip") is None:
        raise VoxtralError("--paste needs xclip on X11: sudo apt install xclip")
    if shutil.which("xdotool") is None:
        import warnings

        from voxtral_mlx.errors import VoxtralWarning

        warnings.warn(XDOTOOL_HINT, VoxtralWarning, stacklevel=2)
    try:
        return X11Keyboard(x)
    except ImportError as e:
        raise VoxtralError(PYNPUT_HINT) from e
