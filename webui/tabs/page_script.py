"""What the tabs do in the browser itself, run once when the page loads (build_ui wires it with
Blocks.load(js=...)):

- a file chosen for an image field is decoded in the browser first; one that is not a picture (a text
  file named .png) is refused there with a plain message, before Gradio's image editor chokes on it;
- Ctrl+Enter (Cmd+Enter) presses the open tab's Generate (Run in Workflows), Esc its Interrupt, as in
  AUTOMATIC1111.
"""
from __future__ import annotations

NOT_AN_IMAGE = "is not an image (expected a PNG, JPEG or WebP picture)."

PAGE_SCRIPT = """
() => {
    if (window.__inkwash) return;
    window.__inkwash = true;

    function say(text) {  // a short-lived note at the top right, like Gradio's toasts
        const note = document.createElement('div');
        note.className = 'inkwash-note';
        note.setAttribute('role', 'alert');
        note.textContent = text;
        note.style.cssText = 'position:fixed;top:16px;right:16px;z-index:1000;max-width:420px;padding:12px 16px;'
            + 'background:#fff7ed;border:1px solid #f97316;border-radius:8px;color:#7c2d12;'
            + 'font:14px sans-serif;box-shadow:0 2px 8px rgba(0,0,0,.15)';
        document.body.appendChild(note);
        setTimeout(() => note.remove(), 8000);
    }

    async function decodes(file) {
        try { (await createImageBitmap(file)).close(); return true; } catch (e) { return false; }
    }

    // Capture phase: hold the change back until every chosen file has decoded, then let it through.
    document.addEventListener('change', async (event) => {
        const input = event.target;
        if (!(input instanceof HTMLInputElement) || input.type !== 'file' || !input.files?.length) return;
        if (!(input.accept || '').includes('image')) return;
        if (input.__checked) { input.__checked = false; return; }
        event.stopImmediatePropagation();
        const files = Array.from(input.files);
        const bad = [];
        for (const file of files) if (!(await decodes(file))) bad.push(file.name);
        if (bad.length) {
            say(bad.join(', ') + ' NOT_AN_IMAGE');
            input.value = '';
            return;
        }
        input.__checked = true;
        input.dispatchEvent(new Event('change', {bubbles: true}));
    }, true);

    function panelButton(names) {
        const panel = Array.from(document.querySelectorAll('[role=tabpanel]')).find(p => p.offsetParent);
        if (!panel) return null;
        return Array.from(panel.querySelectorAll('button')).find(
            b => b.offsetParent && names.some(name => b.textContent.trim().startsWith(name))) || null;
    }

    document.addEventListener('keydown', (event) => {
        if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
            const button = panelButton(['Generate', 'Run']);
            if (button) { event.preventDefault(); button.click(); }
        } else if (event.key === 'Escape') {
            const button = panelButton(['Interrupt']);
            if (button) { button.click(); }
        }
    });
}
""".replace("NOT_AN_IMAGE", NOT_AN_IMAGE)
