"""Notebook tooling behind `make nbs`, `make readme` and `make docs` (Quarto, which nbdev's own commands need, does not
install here). Run from the repo root with the project's venv:

  python docs/nbtools.py run [NB ...] [--skip browser] [-j 2]   re-execute notebooks in place, outputs and widget state kept
  python docs/nbtools.py readme [--check]                       nbs/index.ipynb -> README.md (+ README_files/)
  python docs/nbtools.py stage DEST                             every notebook -> DEST/, ready for `mkdocs build`

Readers of the README and the site see what nbdev's Quarto site would show: `#| hide` and `#| default_exp` cells
are dropped, directive lines are stripped, `#| echo: false` shows only the output, `#| output: false` only the
source, and after each `#| export` cell its public definitions are documented from their docments (nbdev's
`show_doc`, rendered as markdown)."""
import argparse, ast, copy, importlib, inspect, re, shutil, sys, tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
README, README_FILES = ROOT/'README.md', 'README_files'
_DIRECTIVE = re.compile(r'^\s*#\s*\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

# --- directives --------------------------------------------------------------------------------------------------

def directives(cell)->dict:
    "The leading `#| name [value]` lines of a code cell as {name: value}"
    if cell.cell_type != 'code': return {}
    found = {}
    for line in cell.source.splitlines():
        if not line.strip(): continue
        m = _DIRECTIVE.match(line)
        if not m: break
        found[m.group(1)] = m.group(2)
    return found

def strip_directives(src:str)->str:
    "`src` without its leading directive lines"
    lines = src.splitlines()
    while lines and (not lines[0].strip() or _DIRECTIVE.match(lines[0])): lines.pop(0)
    return '\n'.join(lines)

def skipped(cell, flags)->bool:
    "Whether a run skips `cell`, as `nbdev_test` does: `#| eval: false`, or a flag in `flags` (e.g. {'browser'})"
    d = directives(cell)
    return d.get('eval') == 'false' or bool(flags & set(d))

# --- make nbs -----------------------------------------------------------------------------------------------------

def _execute(fn:str, flags:frozenset, timeout:int)->str:
    "Execute notebook `fn` in place in its folder; flagged cells are skipped and lose their outputs"
    from nbclient import NotebookClient
    class Client(NotebookClient):
        async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
            if cell.cell_type == 'code' and skipped(cell, flags):
                cell.outputs, cell.execution_count = [], None
                return cell
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
    nb = nbformat.read(fn, as_version=4)
    Client(nb, timeout=timeout, kernel_name='python3', store_widget_state=True, record_timing=False,
           resources={'metadata': {'path': str(Path(fn).parent)}}).execute()
    nbformat.write(nb, fn)
    return fn

def run(names, skip:str='browser', jobs:int=2, timeout:int=1800):
    "Re-execute notebooks `names` (default all of nbs/) in place, keeping outputs and ipywidgets state"
    fns = [NBS/f'{n.removesuffix(".ipynb")}.ipynb' for n in names] if names else sorted(NBS.glob('*.ipynb'))
    flags = frozenset(o for o in re.split(r'[|,\s]+', skip) if o)
    with ProcessPoolExecutor(jobs) as ex:
        futures = {f: ex.submit(_execute, str(f), flags, timeout) for f in fns}
        failed = []
        for f, fut in futures.items():
            try: print(f'ran {fut.result()}', flush=True)
            except Exception as e: failed.append(f.name); print(f'FAILED {f.name}: {type(e).__name__}: {e}', flush=True)
    if failed: sys.exit(f"{len(failed)} notebook(s) failed: {', '.join(failed)}; their saved outputs are unchanged")

# --- what a reader sees -------------------------------------------------------------------------------------------

def reader_cells(nb, api_module:str=None)->list:
    "The cells of `nb` as the README/site shows them; with `api_module`, docs after each export cell"
    out = []
    for cell in nb.cells:
        d = directives(cell)
        if 'hide' in d or 'default_exp' in d or d.get('include') == 'false': continue
        cell = copy.deepcopy(cell)
        if cell.cell_type == 'code':
            cell.source = strip_directives(cell.source)
            if d.get('output') == 'false': cell.outputs = []
            if d.get('echo') == 'false': cell.metadata.setdefault('tags', []).append('hide-input')
        out.append(cell)
        if api_module and ('export' in d or 'exports' in d):
            out += [nbformat.v4.new_markdown_cell(md) for md in api_docs(api_module, cell.source)]
    return out

def _defs(src:str)->list:
    "(owner, name) of the public top-level functions and classes defined in `src`; `owner` is the class a `@patch` adds to"
    try: tree = ast.parse(src)
    except SyntaxError: return []
    out = []
    for o in tree.body:
        if not isinstance(o, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or o.name.startswith('_'): continue
        patched = any(getattr(d, 'id', getattr(getattr(d, 'func', None), 'id', None)) == 'patch' for d in o.decorator_list)
        ann = o.args.args[0].annotation if patched and o.args.args else None
        out.append((getattr(ann, 'id', None), o.name))
    return out

def _show_doc(obj, level:int)->str:
    "nbdev's markdown for `obj` with its docments, the source link made plain markdown"
    from nbdev.showdoc import show_doc, BasicMarkdownRenderer
    md = show_doc(obj, renderer=BasicMarkdownRenderer, title_level=level)._repr_markdown_()
    md = re.sub(r'^---\s*\n\s*\[source\]\([^)]*\)\{[^}]*\}\s*\n', '', md.lstrip())
    return md.strip()

def api_docs(module:str, src:str)->list:
    "Markdown docs of each public definition of export cell `src` of `module` (classes with their public methods)"
    mod = importlib.import_module(f'imgclean.{module}')
    docs = []
    for owner, name in _defs(src):
        obj = getattr(getattr(mod, owner, None), name, None) if owner else getattr(mod, name, None)
        if obj is None: continue
        docs.append(_show_doc(obj, 3))
        if inspect.isclass(obj):
            docs += [_show_doc(m, 4) for n, m in vars(obj).items()
                     if not n.startswith('_') and inspect.isfunction(m) and m.__doc__]
    return docs

def default_exp(nb)->str:
    "The module a notebook exports to (its `#| default_exp`), or None"
    return next((d['default_exp'] for d in map(directives, nb.cells) if d.get('default_exp')), None)

# --- make readme --------------------------------------------------------------------------------------------------

def render_readme(dest:Path):
    "Write README.md and its output images from nbs/index.ipynb into folder `dest`"
    from nbconvert import MarkdownExporter
    from traitlets.config import Config
    nb = nbformat.read(NBS/'index.ipynb', as_version=4)
    nb.cells = reader_cells(nb)
    cfg = Config({'TagRemovePreprocessor': {'enabled': True, 'remove_input_tags': {'hide-input'}}})
    body, res = MarkdownExporter(config=cfg).from_notebook_node(nb, resources={'output_files_dir': README_FILES})
    body = re.sub(r'\n{3,}', '\n\n', '\n'.join(l.rstrip() for l in body.splitlines()))
    note = '<!-- Generated from nbs/index.ipynb by `make readme`: edit the notebook, not this file. -->\n\n'
    (dest/'README.md').write_text(note + body.strip() + '\n', encoding='utf-8')
    for name, data in res.get('outputs', {}).items():
        if f']({name})' not in body: continue   # an output's other formats (a PIL image also has a JPEG)
        (dest/name).parent.mkdir(parents=True, exist_ok=True)
        (dest/name).write_bytes(data)

def _files(root:Path)->dict:
    "README.md and README_files/* under `root` as {relative name: bytes}"
    fns = [root/'README.md'] + sorted((root/README_FILES).glob('*'))
    return {str(f.relative_to(root)): f.read_bytes() for f in fns if f.is_file()}

def readme(check:bool=False):
    "Regenerate README.md from index.ipynb; with `check`, fail if the committed one differs"
    with tempfile.TemporaryDirectory() as tmp:
        render_readme(Path(tmp))
        new, old = _files(Path(tmp)), _files(ROOT)
        if check:
            if new != old:
                diff = sorted(k for k in new.keys() | old.keys() if new.get(k) != old.get(k))
                sys.exit(f"README.md is not what `make readme` writes from nbs/index.ipynb (differs: {', '.join(diff)}): "
                         "edit nbs/index.ipynb, then run `make readme` and commit both")
            print('README.md matches nbs/index.ipynb'); return
        shutil.rmtree(ROOT/README_FILES, ignore_errors=True)
        for name, data in new.items(): (ROOT/name).parent.mkdir(parents=True, exist_ok=True); (ROOT/name).write_bytes(data)
        print(f"wrote README.md{' and ' + README_FILES + '/' if len(new) > 1 else ''} from nbs/index.ipynb")

# --- make docs ----------------------------------------------------------------------------------------------------

# Links written for README.md (relative to the repo root) or between notebooks -> the site's pages. Notebook pages are
# HTML by the time mkdocs sees them, so mkdocs neither rewrites nor checks their links: this does both.
_SITE_LINKS = [(r'\]\((?:nbs/)?([\w.-]+)\.ipynb', r'](\1.html'), (r'\]\(bench/README\.md', r'](bench.html')]
_LINK = re.compile(r'\]\(([^)\s]+)\)')

def site_links(cell, pages:set):
    "Rewrite `cell`'s markdown links to site pages; raise if a relative link leads to no page in `pages`"
    if cell.cell_type != 'markdown': return cell
    for pat, rep in _SITE_LINKS: cell.source = re.sub(pat, rep, cell.source)
    for target in _LINK.findall(cell.source):
        page = target.split('#')[0]
        if page and not re.match(r'[a-z]+:', page) and page not in pages:
            raise ValueError(f"link to {target!r} leads to no page of the site (pages: {sorted(pages)}); link to a notebook "
                             "as nbs/NAME.ipynb, to the figures as bench/README.md, or use a full URL")
    return cell

def api_index(nbs)->str:
    "A markdown page listing every module's public names with their one-line docstrings"
    lines = ['# API index', '', 'Every public name of each stage, with its one-line summary; the stage page documents its '
             'parameters (docments) next to an example.', '']
    for fn, mod in nbs:
        m = importlib.import_module(f'imgclean.{mod}')
        lines += [f'## [imgclean.{mod}]({fn.name})', '', (m.__doc__ or '').strip(), '']
        for name in getattr(m, '__all__', []):
            doc = (inspect.getdoc(getattr(m, name)) or '').split('\n')[0] if callable(getattr(m, name)) else ''
            lines.append(f'- `{name}`' + (f': {doc}' if doc else ''))
        lines.append('')
    return '\n'.join(lines)

def stage(dest:Path):
    "Write every notebook as the site shows it (API docs added after export cells) into `dest`, plus bench.md, api.md"
    dest = Path(dest)
    shutil.rmtree(dest, ignore_errors=True); dest.mkdir(parents=True)
    modules, fns = [], sorted(NBS.glob('*.ipynb'))
    pages = {f'{f.stem}.html' for f in fns} | {'bench.html', 'api.html'}
    for fn in fns:
        nb = nbformat.read(fn, as_version=4)
        mod = default_exp(nb)
        try: nb.cells = [site_links(c, pages) for c in reader_cells(nb, api_module=mod)]
        except ValueError as e: sys.exit(f'{fn}: {e}')
        nbformat.write(nb, dest/fn.name)
        if mod: modules.append((fn, mod))
    bench = (ROOT/'bench'/'README.md').read_text(encoding='utf-8')
    (dest/'bench.md').write_text(bench, encoding='utf-8')
    (dest/'api.md').write_text(api_index(modules), encoding='utf-8')
    shutil.copy(ROOT/'docs'/'extra.css', dest/'extra.css')
    print(f'staged {len(list(dest.glob("*.ipynb")))} notebooks and {len(modules)} module APIs in {dest}')

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('run', help='re-execute notebooks in place, keeping outputs')
    r.add_argument('names', nargs='*', help='notebook names (default: all of nbs/)')
    r.add_argument('--skip', default='browser', help="flags whose cells are not run, e.g. 'browser' or 'slow|browser'")
    r.add_argument('-j', '--jobs', type=int, default=2)
    r.add_argument('--timeout', type=int, default=1800, help='seconds per cell')
    sub.add_parser('readme', help='README.md from nbs/index.ipynb').add_argument('--check', action='store_true')
    sub.add_parser('stage', help='notebooks as the site shows them').add_argument('dest', type=Path)
    a = p.parse_args(argv)
    if a.cmd == 'run': run(a.names, a.skip, a.jobs, a.timeout)
    elif a.cmd == 'readme': readme(a.check)
    else: stage(a.dest)

if __name__ == '__main__': main()
