lungddpm downstream --powered --segnet own --real 4 --out runs/downstream-powered/own-real4 --cache runs/downstream-powered/cache --threads 1 --time-budget 153 
