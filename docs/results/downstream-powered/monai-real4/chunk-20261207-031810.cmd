lungddpm downstream --powered --segnet monai --real 4 --monai-dice batch --out runs/downstream-powered/monai-real4 --cache runs/downstream-powered/cache --threads 1 --time-budget 55 
