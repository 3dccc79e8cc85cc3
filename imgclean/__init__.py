__version__ = "0.1.0"

import warnings as _warnings
# fastai 2.8 compiles a few layers with `torch.jit.script`, which this torch deprecates: a FutureWarning at every import
# of fastai that our users cannot act on. Only that message is silenced.
_warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
