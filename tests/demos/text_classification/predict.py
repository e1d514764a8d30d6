import paddlehub as hub

if __name__ == '__main__':

    data = [
        ['The room was old and the special offer was nothing special. Average overall.'],
        ['Breakfast was plentiful and the staff were friendly. Would stay again!'],
        ['Dirty, noisy and overpriced.'],
    ]
    label_map = {0: 'negative', 1: 'positive'}

    model = hub.Module(
        name='bert_cased_L-24_H-1024_A-16',
        task='seq-cls',
        load_checkpoint='./checkpoint/best_model/model.pdparams',
        label_map=label_map)
    results = model.predict(data, max_seq_len=50, batch_size=1, use_gpu=False)
    for idx, text in enumerate(data):
        print('Data: {} \t Lable: {}'.format(text[0], results[idx]))
