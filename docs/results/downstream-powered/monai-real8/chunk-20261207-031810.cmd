lungddpm downstream --powered --segnet monai --real 8 --monai-dice batch --out runs/downstream-powered/monai-real8 --cache runs/downstream-powered/cache --threads 1 --time-budget 55 
