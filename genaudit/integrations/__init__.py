"""genaudit where training and experiment tracking happen: a Lightning callback (`lightning`) and MLflow
tracking (`mlflow`). Each needs its optional extra (`pip install 'genaudit[lightning]'`, `'genaudit[mlflow]'`);
importing genaudit never loads them."""
