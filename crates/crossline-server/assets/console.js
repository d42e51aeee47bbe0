// Crossline console: small progressive enhancements. Every page works without this file.

// Tables marked data-sortable sort by a clicked header; a cell's data-sort-value wins over its text.
function sortableTables() {
  for (const table of document.querySelectorAll('table[data-sortable]')) {
    const headers = [...table.querySelectorAll('thead th')];
    headers.forEach((header, column) => {
      if (!header.hasAttribute('data-sort')) return;
      header.tabIndex = 0;
      const sort = () => {
        const ascending = header.getAttribute('aria-sort') !== 'ascending';
        headers.forEach((other) => other.removeAttribute('aria-sort'));
        header.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        const numeric = header.dataset.sort === 'number';
        const body = table.tBodies[0];
        const key = (row) => {
          const cell = row.cells[column];
          const raw = cell?.dataset.sortValue ?? cell?.textContent.trim() ?? '';
          return numeric ? Number(raw) || 0 : raw.toLowerCase();
        };
        const rows = [...body.rows].sort((a, b) => {
          const [x, y] = [key(a), key(b)];
          return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
        });
        body.append(...rows);
      };
      header.addEventListener('click', sort);
      header.addEventListener('keydown', (event) => {
        if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); sort(); }
      });
    });
  }
}

// The timeline's channel chips show or hide the events of one channel.
function timelineFilters() {
  for (const filters of document.querySelectorAll('[data-timeline-filters]')) {
    const timeline = document.getElementById(filters.dataset.timelineFilters);
    if (!timeline) continue;
    filters.addEventListener('click', (event) => {
      const button = event.target.closest('button[data-filter]');
      if (!button) return;
      for (const other of filters.querySelectorAll('button')) other.setAttribute('aria-pressed', String(other === button));
      const channel = button.dataset.filter;
      for (const item of timeline.children) {
        item.hidden = channel !== '' && item.dataset.channel !== channel;
      }
    });
  }
}

// "/" jumps to the search box, as in most consoles.
function searchShortcut() {
  const search = document.querySelector('[data-testid="profile-search"]');
  if (!search) return;
  document.addEventListener('keydown', (event) => {
    const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement;
    if (event.key === '/' && !typing) { event.preventDefault(); search.focus(); search.select(); }
  });
}

// A region marked data-refresh-seconds reads itself again from the server every so often (the
// supervisor view), replacing only its own contents; a failed read keeps what is shown.
function refreshingRegions() {
  for (const region of document.querySelectorAll('[data-refresh-seconds][data-testid]')) {
    const seconds = Math.max(2, Number(region.dataset.refreshSeconds) || 10);
    const testid = region.dataset.testid;
    setInterval(async () => {
      if (document.hidden) return;
      try {
        const response = await fetch(location.href, { credentials: 'same-origin', headers: { Accept: 'text/html' } });
        if (!response.ok) return;
        const page = new DOMParser().parseFromString(await response.text(), 'text/html');
        const fresh = page.querySelector(`[data-testid="${CSS.escape(testid)}"]`);
        if (fresh) region.replaceChildren(...fresh.childNodes);
      } catch (_) { /* the next tick tries again */ }
    }, seconds * 1000);
  }
}

sortableTables();
timelineFilters();
searchShortcut();
refreshingRegions();
