"What README.md and the site show of a notebook (docs/nbtools.py): hidden cells dropped, directives stripped, docments added."
import importlib.util
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('nbtools', ROOT/'docs'/'nbtools.py')
nbtools = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(nbtools)


def nb(*cells): return new_notebook(cells=list(cells))


def test_directives_and_skipping():
    c = new_code_cell('#| export\n#|hide\n#| echo: false\nx = 1\n#| not a directive after code')
    assert nbtools.directives(c) == {'export': '', 'hide': '', 'echo': 'false'}
    assert nbtools.strip_directives(c.source) == 'x = 1\n#| not a directive after code'
    assert nbtools.skipped(new_code_cell('#| browser\nrun()'), {'browser'})
    assert not nbtools.skipped(new_code_cell('#| slow\nrun()'), {'browser'})
    assert nbtools.skipped(new_code_cell('#| eval: false\nrun()'), set())


def test_reader_cells_show_what_nbdev_docs_show():
    out = new_output('execute_result', {'text/plain': '2'}, execution_count=1)
    cells = nbtools.reader_cells(nb(
        new_code_cell('#| default_exp core'),
        new_markdown_cell('# Title'),
        new_code_cell('#| hide\nsetup()'),
        new_code_cell('#| include: false\nsetup()'),
        new_code_cell('#| echo: false\n1+1', outputs=[out]),
        new_code_cell('#| output: false\n1+1', outputs=[out]),
        new_code_cell('1+1', outputs=[out])))
    assert [c.source for c in cells] == ['# Title', '1+1', '1+1', '1+1']
    assert cells[1].metadata['tags'] == ['hide-input'] and len(cells[1].outputs) == 1
    assert cells[2].outputs == [] and len(cells[3].outputs) == 1


def test_export_cells_get_their_docments():
    src = '#| export\ndef rel_name(fn, root): ...\ndef _private(): ...\nclass ImageTooLarge(ValueError): ...'
    cells = nbtools.reader_cells(nb(new_code_cell(src)), api_module='core')
    assert [c.cell_type for c in cells] == ['code', 'markdown', 'markdown']
    assert cells[0].source.startswith('def rel_name')
    assert cells[1].source.startswith('### rel_name') and 'root:Path' in cells[1].source
    assert cells[2].source.startswith('### ImageTooLarge')
    assert '{target=' not in cells[1].source            # Quarto's link attributes are gone


def test_patched_methods_are_documented_on_their_class():
    src = "#| export\n@patch\ndef relabel(self:CleanerState, name:str, label:str): ..."
    assert nbtools._defs(src.split('\n', 1)[1]) == [('CleanerState', 'relabel')]
    cells = nbtools.reader_cells(nb(new_code_cell(src)), api_module='widgets')
    assert cells[1].source.startswith('### CleanerState.relabel')


def test_site_links():
    pages = {'tutorial.html', 'bench.html'}
    c = nbtools.site_links(new_markdown_cell('[t](nbs/tutorial.ipynb), [f](bench/README.md#serving), [w](https://x.org)'), pages)
    assert c.source == '[t](tutorial.html), [f](bench.html#serving), [w](https://x.org)'
    with pytest.raises(ValueError, match='tests/x.py'): nbtools.site_links(new_markdown_cell('[x](tests/x.py)'), pages)

