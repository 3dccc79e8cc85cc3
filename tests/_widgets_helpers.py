"Helpers for the widget tests: a throw-away JupyterLab server and generated test notebooks."
import json, os, socket, subprocess, sys, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def write_notebook(fn, cells):
    "Write a minimal nbformat-4 notebook with code `cells` to `fn`"
    nb = dict(nbformat=4, nbformat_minor=5, metadata=dict(kernelspec=dict(name='python3', display_name='Python 3', language='python')),
              cells=[dict(cell_type='code', metadata={}, source=c, outputs=[], execution_count=None, id=f'c{i}') for i, c in enumerate(cells)])
    Path(fn).write_text(json.dumps(nb, indent=1))
    return Path(fn)


class JupyterLab:
    "Start `jupyter lab` on 127.0.0.1 with a token, a temp root and temp config/runtime dirs; stop on exit"
    def __init__(self, root_dir, tmp, timeout=60):
        self.root_dir, self.tmp, self.timeout = Path(root_dir), Path(tmp), timeout
        self.port, self.token = free_port(), 'imgclean-test-token'

    def __enter__(self):
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(self.tmp/'cfg'), JUPYTER_RUNTIME_DIR=str(self.tmp/'rt'),
                   JUPYTER_DATA_DIR=str(self.tmp/'data'), IPYTHONDIR=str(self.tmp/'ipy'), JUPYTER_PLATFORM_DIRS='1',
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
        # JUPYTER_DATA_DIR is temp, so kernels and lab extensions come from the venv's sys.prefix/share/jupyter
        self.log = open(self.tmp/'jupyter.log', 'wb')
        self.proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={self.port}',
                                      f'--IdentityProvider.token={self.token}', f'--ServerApp.root_dir={self.root_dir}',
                                      '--ServerApp.open_browser=False'] + (['--allow-root'] if hasattr(os, 'geteuid') and os.geteuid() == 0 else []) + [ '--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root_dir, start_new_session=True)
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.proc.poll() is not None: raise RuntimeError(f"jupyter lab exited: {self.logtext()}")
            try:
                urllib.request.urlopen(f'{self.url}/api/status?token={self.token}', timeout=2).read(); return self
            except OSError: time.sleep(0.5)
        self.__exit__(); raise TimeoutError(f"jupyter lab did not answer in {self.timeout}s: {self.logtext()}")

    @property
    def url(self): return f'http://127.0.0.1:{self.port}'
    def logtext(self): return (self.tmp/'jupyter.log').read_text(errors='replace')[-3000:]

    def shutdown_kernels(self):
        "Shut down every kernel of this server through its REST API"
        try:
            ks = json.loads(urllib.request.urlopen(f'{self.url}/api/kernels?token={self.token}', timeout=5).read())
            for k in ks:
                req = urllib.request.Request(f"{self.url}/api/kernels/{k['id']}?token={self.token}", method='DELETE')
                urllib.request.urlopen(req, timeout=10).read()
        except OSError: pass

    def __exit__(self, *a):
        if self.proc.poll() is None:
            self.shutdown_kernels()
            self.proc.terminate()
            try: self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill(); self.proc.wait(10)
        self.log.close()
